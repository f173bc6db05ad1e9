"""`gpufleet exec -- true` on every host, whole process, against pdsh at its default fan-out and at
`-f 256`, side by side on process-runtime clusters of 8, 64 and 256 hosts (needs root).

Goal (issue: day 2 and scale): a cold `gpufleet exec -- true` on 256 hosts in at most 0.3x the time
of pdsh's best, and ahead of pdsh at every size. Medians; the runs alternate.

    .venv/bin/python bench/exec_fanout.py [--sizes 8 64 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, state_dir  # noqa: E402
from gpufleet.local import cluster_down, cluster_up  # noqa: E402
from gpufleet.local.keys import generate_ed25519  # noqa: E402
from gpufleet.spec import load_spec  # noqa: E402

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


def stack(folder: Path, hosts: int) -> Path:
    # A /16: 256 hosts do not fit a /24 beside the controller and the NAS stand-in.
    config: dict[str, Any] = {
        "name": f"bx{hosts}",
        "provisioner": "local",
        "local": {"runtime": "process"},
        "image": {"name": "registry.example.com/ml/bench"},
        "ssh": {
            "authorized_keys": [generate_ed25519().public_line("bench")],
            "admin_cidrs": ["10.199.0.1/32"],
        },
        "network": {"cluster_cidr": "10.199.0.0/16", "fabric": "ethernet"},
        "hosts": [
            {"name": f"n{i}", "address": f"10.199.{1 + i // 200}.{10 + i % 200}", "gpus": 0, "ifname": "eth0"}
            for i in range(hosts)
        ],
    }
    path = folder / f"Pulumi.{config['name']}.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": config}}, sort_keys=False))
    return path


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, sshd per host)")
    project = Path(tempfile.mkdtemp(prefix="gpufleet-bench-exec-"))
    (project / "Pulumi.yaml").write_text("name: bench\nruntime: python\n")
    rows = []
    for size in args.sizes:
        path = stack(project, size)
        spec = load_spec(path)
        inventory = cluster_up(spec, project)
        try:
            folder = state_dir(project, spec.name)
            options = [
                "-i", str(folder / KEY_FILE), "-o", f"UserKnownHostsFile={folder / KNOWN_HOSTS_FILE}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-p", str(inventory.hosts[0].ssh_port),
            ]  # fmt: skip
            env = dict(os.environ, PDSH_SSH_ARGS=" ".join(shlex.quote(o) for o in options) + " -l%u %h")
            targets = ",".join(h.ssh_address for h in inventory.hosts)
            pdsh = ["pdsh", "-R", "ssh", "-l", inventory.hosts[0].user, "-w", targets]
            commands = {
                "gpufleet exec": [GPUFLEET, "exec", "-f", str(path), "--", "true"],
                "pdsh (fan-out 32)": [*pdsh, "true"],
                "pdsh -f 256": [*pdsh[:2], "ssh", "-f", "256", *pdsh[3:], "true"],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for argv in commands.values():  # warm-up: page cache, first sshd forks
                timed(argv, env=env, cwd=project)
            for _ in range(args.repeat):
                for name, argv in commands.items():
                    times[name].append(timed(argv, env=env, cwd=project))
            medians = {name: statistics.median(values) for name, values in times.items()}
            rows.append((size, medians))
            print(size, {k: round(v, 2) for k, v in medians.items()}, flush=True)
        finally:
            cluster_down(spec, project, purge=True)
    print("\n| hosts | gpufleet exec s | pdsh s | pdsh -f 256 s | exec / pdsh's best |")
    print("|---:|---:|---:|---:|---:|")
    for size, medians in rows:
        best = min(medians["pdsh (fan-out 32)"], medians["pdsh -f 256"])
        print(
            f"| {size} | {medians['gpufleet exec']:.2f} | {medians['pdsh (fan-out 32)']:.2f} | "
            f"{medians['pdsh -f 256']:.2f} | {medians['gpufleet exec'] / best:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
