"""Render generated clusters of 8, 128 and 1,024 hosts; then judge stack files of 1,024 and
20,000 hosts and one of 20,000 erroneous hosts; print two tables.

Goals: 1,024 hosts render in under 1 s after imports, and the per-host cost at
1,024 hosts stays within 1.25x of that at 128 (issue: spec and renderer);
20,000 hosts are judged by ``gpufleet validate`` in under 3 s with under 10 KiB
of output (issue: input no file can crash). Medians of several runs; validation
is timed separately from rendering. Side by side with the file readers: the
strict reader against PyYAML's SafeLoader (the reader before it) and CSafeLoader.

    .venv/bin/python bench/render.py [--repeat 7] [--cli-repeat 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from specs import generated_spec  # bench/specs.py (bench/ is on sys.path when run as a script)

from gpufleet.errors import SpecError
from gpufleet.render import render_cluster
from gpufleet.spec import ClusterSpec, load_spec, parse_spec, strict_yaml

GPUFLEET = Path(sys.executable).parent / "gpufleet"


def median_seconds(action: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def erroneous_spec(hosts: int) -> dict[str, Any]:
    """The generated spec with every host wrong three ways (name, address, GPU count)."""
    data = generated_spec(hosts)
    for host in data["hosts"]:
        host.update(name=host["name"].upper(), address="10.128.0.300", gpus=-1)
    return data


def write_stack(folder: Path, name: str, data: dict[str, Any]) -> Path:
    path = folder / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": data}}, sort_keys=False))
    return path


def judge(path: Path) -> None:
    with contextlib.suppress(SpecError):
        load_spec(path)


def cli(path: Path) -> tuple[int, int]:
    done = subprocess.run([str(GPUFLEET), "validate", "-f", str(path)], capture_output=True, check=False)
    return done.returncode, len(done.stdout) + len(done.stderr)


def whole_render(path: Path, out: Path) -> tuple[float, int]:
    """``gpufleet render -f FILE --out DIR`` as a user runs it: (seconds, the process's peak RSS in KiB)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    child = subprocess.Popen(
        [str(GPUFLEET), "render", "-f", str(path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"gpufleet render -f {path} exited {child.returncode}")
    return seconds, usage.ru_maxrss


def whole_process_table(cli_repeat: int) -> None:
    """The issue's measure: whole-process render time at 1,024 hosts against 8 (goal <= 2.5x)."""
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for hosts in (8, 1024, 4096):
            path = write_stack(Path(folder), f"r{hosts}", generated_spec(hosts))
            runs = [whole_render(path, Path(folder) / "out") for _ in range(cli_repeat)]
            rows.append((hosts, statistics.median(s for s, _ in runs), max(m for _, m in runs)))
    base = rows[0][1]
    print(f"\n{'hosts':>6} {'render CLI s':>13} {'vs 8 hosts':>11} {'peak RSS MiB':>13}")
    for hosts, seconds, rss in rows:
        print(f"{hosts:>6} {seconds:>13.2f} {seconds / base:>10.2f}x {rss / 1024:>13.0f}")
    print(
        "whole process: Python start, validation, render, writing every file (goal: 1,024 within 2.5x of 8)"
    )


def validation_table(repeat: int, cli_repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cases = [
            ("1,024 hosts", write_stack(Path(folder), "h1024", generated_spec(1024))),
            ("20,000 hosts", write_stack(Path(folder), "h20000", generated_spec(20_000))),
            ("20,000 erroneous", write_stack(Path(folder), "e20000", erroneous_spec(20_000))),
        ]
        print(
            f"\n{'file':<17} {'MiB':>5} {'SafeLoader s':>12} {'CSafeLoader s':>13} {'strict s':>9} "
            f"{'judged s':>9} {'CLI s':>6} {'exit':>4} {'output B':>9}"
        )
        for label, path in cases:
            text = path.read_text()
            safe = median_seconds(lambda t=text: yaml.load(t, Loader=yaml.SafeLoader), max(1, repeat // 3))
            csafe = median_seconds(lambda t=text: yaml.load(t, Loader=yaml.CSafeLoader), repeat)
            strict = median_seconds(lambda t=text: strict_yaml.load(t), repeat)
            judged = median_seconds(lambda p=path: judge(p), repeat)
            cli_s = median_seconds(lambda p=path: cli(p), cli_repeat)
            code, size = cli(path)
            print(
                f"{label:<17} {path.stat().st_size / 2**20:>5.1f} {safe:>12.2f} {csafe:>13.2f} {strict:>9.2f} "
                f"{judged:>9.2f} {cli_s:>6.2f} {code:>4} {size:>9,}"
            )
    print(
        "\njudged: read + parse + validate in-process; CLI: 'gpufleet validate -f FILE', Python start "
        "included (goal < 3 s, output < 10 KiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cli-repeat", type=int, default=5)
    args = parser.parse_args()
    render_cluster(parse_spec(generated_spec(2)))  # warm the template cache
    rows = []
    for hosts in (8, 128, 1024):
        data = generated_spec(hosts)
        spec: ClusterSpec = parse_spec(data)
        validate_s = median_seconds(lambda data=data: parse_spec(data), args.repeat)
        render_s = median_seconds(lambda spec=spec: render_cluster(spec), args.repeat)
        files = len(render_cluster(spec))
        rows.append((hosts, files, validate_s, render_s, render_s / hosts))
    per_host_128 = rows[1][4]
    print(
        f"{'hosts':>6} {'files':>6} {'validate s':>11} {'render s':>9} {'render ms/host':>15} {'vs 128':>7}"
    )
    for hosts, files, validate_s, render_s, per_host in rows:
        print(
            f"{hosts:>6} {files:>6} {validate_s:>11.3f} {render_s:>9.3f} "
            f"{per_host * 1000:>15.3f} {per_host / per_host_128:>6.2f}x"
        )
    big = rows[2]
    print(
        f"\n1,024 hosts: render {big[3]:.3f} s (goal < 1 s); per-host ratio vs 128: {big[4] / per_host_128:.2f}x (goal <= 1.25x)"
    )
    whole_process_table(args.cli_repeat)
    validation_table(args.repeat, args.cli_repeat)


if __name__ == "__main__":
    main()
