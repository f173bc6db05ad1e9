"""Time `up` and `down` of local clusters of 2, 4 and 8 hosts; print a table.

Goal (issue: local provisioner): 8 hosts up, every key login verified, in under
3 s; down in under 2 s, on the project's 2-core machines. Needs root. Times are
in-process (after imports), plus one run of the real CLI per size (Python start
included). Medians of several runs, on a cluster name and subnet of its own.

    .venv/bin/python bench/local_up.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from gpufleet.local import cluster_down, cluster_up
from gpufleet.local.keys import generate_ed25519
from gpufleet.spec import parse_spec

NAME = "bench-local"
OCTET = 233


def config(hosts: int) -> dict[str, object]:
    net = f"10.{OCTET}.0"
    return {
        "name": NAME,
        "provisioner": "local",
        "local": {"runtime": "process"},
        "image": {"name": "registry.example.com/ml/train"},
        "ssh": {"authorized_keys": [generate_ed25519().public_line("bench")], "admin_cidrs": [f"{net}.1/32"]},
        "network": {"cluster_cidr": f"{net}.0/24", "fabric": "ethernet"},
        "nas": [
            {"name": "data", "server": f"{net}.250", "export": "/d", "mount": "/data", "read_only": True},
            {"name": "checkpoints", "server": f"{net}.250", "export": "/c", "mount": "/checkpoints"},
        ],
        "hosts": [
            {"name": f"node-{i}", "address": f"{net}.{11 + i}", "gpus": 0, "ifname": "eth0"}
            for i in range(hosts)
        ],
    }


def cli_times(root: Path, hosts: int) -> tuple[float, float]:
    stack = root / "Pulumi.bench.yaml"
    stack.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": config(hosts)}}))
    gpufleet = str(Path(sys.executable).parent / "gpufleet")
    times = []
    for command in ("up", "down"):
        started = time.perf_counter()
        subprocess.run([gpufleet, command, "-f", str(stack)], cwd=root, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/local_up.py needs root (network namespaces, sshd, nft)")
    root = Path(tempfile.mkdtemp(prefix="gpufleet-bench-"))
    shutil.copy(Path(__file__).resolve().parents[1] / "Pulumi.yaml", root / "Pulumi.yaml")
    print("| hosts | up s (median) | up s (max) | down s (median) | down s (max) | CLI up s | CLI down s |")
    print("|------:|--------------:|-----------:|----------------:|-------------:|---------:|-----------:|")
    try:
        for hosts in (2, 4, 8):
            spec = parse_spec(config(hosts))
            ups, downs = [], []
            for _ in range(args.repeat):
                started = time.perf_counter()
                cluster_up(spec, root)
                ups.append(time.perf_counter() - started)
                started = time.perf_counter()
                cluster_down(spec, root)
                downs.append(time.perf_counter() - started)
            cli_up, cli_down = cli_times(root, hosts)
            print(
                f"| {hosts} | {statistics.median(ups):.2f} | {max(ups):.2f} | {statistics.median(downs):.3f} "
                f"| {max(downs):.3f} | {cli_up:.2f} | {cli_down:.2f} |",
                flush=True,
            )
    finally:
        cluster_down(parse_spec(config(2)), root)
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
