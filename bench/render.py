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

from specs import generated_spec  # bench/specs.py (bench/ is on sys.path when run as a script)

from gpufleet.render import render_cluster
from gpufleet.spec import ClusterSpec, parse_spec


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
