"""How long `gpufleet probe` takes on the largest recorded host (it runs before every launch).

    .venv/bin/python bench/probe.py [RUNS]

Times ``probe(root)`` in-process (after imports) and the bare script as the
launcher runs it on a remote host (``python3 -I probe.py --root DIR``, so
interpreter start-up included), median of RUNS (default 21) each. Also times
facts parsing and the NCCL derivation + lint for one host, which run on the
controller. Goal: probe < 100 ms on the largest tree.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet import probe as probe_module  # noqa: E402
from gpufleet.derive.nccl import nccl_env  # noqa: E402
from gpufleet.facts import parse_facts  # noqa: E402
from gpufleet.lint import lint  # noqa: E402
from gpufleet.spec import load_spec  # noqa: E402

HOSTS = ROOT / "tests" / "fixtures" / "hosts"
GOAL_MS = 100.0


def file_count(folder: Path) -> int:
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(folder))


def median_ms(run: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    largest = max(HOSTS.iterdir(), key=lambda p: file_count(p) if p.is_dir() else -1)
    facts = probe_module.probe(largest)
    ports = sum(len(d["ports"]) for d in facts["rdma"] or [])
    gid_files = sum(1 for _ in largest.glob("sys/devices/*/*/infiniband/*/ports/*/gids/*"))
    script = Path(probe_module.__file__)
    command = [sys.executable, "-I", str(script), "--root", str(largest)]
    empty = [sys.executable, "-I", "-c", "pass"]

    in_process = median_ms(lambda: probe_module.probe(largest), runs)
    subprocess_ms = median_ms(lambda: subprocess.run(command, capture_output=True, check=True), runs)
    startup_ms = median_ms(lambda: subprocess.run(empty, capture_output=True, check=True), runs)
    spec = load_spec(ROOT / "stacks" / "Pulumi.example-ib.yaml")
    parsed = parse_facts(facts, "bench")
    parse_ms = median_ms(lambda: parse_facts(facts, "bench"), runs)
    derive_ms = median_ms(lambda: nccl_env(spec, spec.hosts[0], parsed), runs)
    lint_ms = median_ms(lambda: lint(spec, {h.name: parsed for h in spec.hosts}), runs)

    print(
        f"largest tree: {largest.name}: {file_count(largest)} files, {ports} RDMA ports, {gid_files} GID slots"
    )
    print(f"median of {runs} runs, python {sys.version.split()[0]}")
    print(f"| probe in-process        | {in_process:7.1f} ms |")
    print(
        f"| probe as a script       | {subprocess_ms:7.1f} ms | (python -I start-up alone: {startup_ms:.1f} ms)"
    )
    print(f"| parse facts (pydantic)  | {parse_ms:7.2f} ms |")
    print(f"| nccl_env for one host   | {derive_ms:7.2f} ms |")
    print(f"| lint, {len(spec.hosts)} hosts with facts | {lint_ms:7.2f} ms |")
    verdict = "ok" if max(in_process, subprocess_ms) < GOAL_MS else "OVER"
    print(f"goal: probe < {GOAL_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
