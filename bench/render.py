"""Render generated clusters of 8, 128 and 1,024 hosts; print a table.

Goal (issue: spec and renderer): 1,024 hosts render in under 1 s after imports,
and the per-host cost at 1,024 hosts stays within 1.25x of that at 128.
Medians of several runs; validation is timed separately from rendering.

    .venv/bin/python bench/render.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from gpufleet.render import render_cluster
from gpufleet.spec import ClusterSpec, parse_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V bench"


def generated_spec(hosts: int) -> dict[str, Any]:
    return {
        "name": f"bench-{hosts}",
        "image": {"name": "registry.example.com/ml/train", "digest": "sha256:" + "b" * 64},
        "ssh": {"authorized_keys": [KEY], "admin_cidrs": ["10.20.0.0/24"]},
        "network": {"cluster_cidr": "10.128.0.0/12", "fabric": "infiniband"},
        "nas": [
            {"name": "data", "server": "10.128.0.2", "export": "/data", "mount": "/data", "read_only": True},
            {"name": "ckpt", "server": "10.128.0.2", "export": "/ckpt", "mount": "/checkpoints"},
        ],
        "jupyter": {"enabled": True},
        "hosts": [
            {
                "name": f"gpu-{i:04d}",
                "address": f"10.128.{i // 200}.{i % 200 + 10}",  # racks of 200 hosts per /24
                "gpus": 8,
                "ifname": "ens10f0",
                "hcas": [f"mlx5_{n}" for n in range(8)],
            }
            for i in range(hosts)
        ],
    }


def median_seconds(action: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
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


if __name__ == "__main__":
    main()
