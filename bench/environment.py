"""The environment's costs: lock, cold and cached builds (1 and 20 packages), preflight's
environment check and train's parity check, each side by side with the same step without it.
Needs root (the local image cache, docker-runtime clusters).

Goals (issue: the team's environment): train's start with the parity check at most 5% slower.

    .venv/bin/python bench/environment.py [--repeat 3] [--hosts 2 8] [--skip-builds]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from local_containers import stack  # noqa: E402

from gpufleet.inventory import Inventory, load_inventory, state_dir  # noqa: E402
from gpufleet.launcher import jobs, preflight  # noqa: E402
from gpufleet.launcher.cluster import Cluster  # noqa: E402
from gpufleet.launcher.connections import HostConnections  # noqa: E402
from gpufleet.local import cluster_down, cluster_up, images  # noqa: E402
from gpufleet.spec import ClusterSpec, load_spec  # noqa: E402

OCTET = 246
# Small pure-Python packages from the index, none of them already in the image.
TWENTY = [
    "six", "toolz", "tabulate", "termcolor", "colorama", "wcwidth", "tqdm", "filelock", "cachetools",
    "more-itertools", "sortedcontainers", "frozenlist", "multidict", "zipp", "pytz", "appdirs",
    "distro", "docopt", "inflection", "humanize",
]  # fmt: skip
HELLO = "print('hello')\n"


def quiet(_: str) -> None:
    pass


def timed(work: Callable[[], object]) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


def with_packages(spec: ClusterSpec, packages: list[str]) -> ClusterSpec:
    return spec.model_copy(update={"image": spec.image.model_copy(update={"python_packages": packages})})


def builds(folder: Path) -> list[tuple[str, str]]:
    base = load_spec(stack(folder, "bench-env", 2, "docker", OCTET))
    rows = []
    for packages in (TWENTY[:1], TWENTY):
        spec = with_packages(base, packages)
        started = time.monotonic()
        lock = images.lock_image(spec, None, False, quiet)
        lock_s = time.monotonic() - started
        rows.append(
            (f"lock, {len(packages)} package(s) ({len(lock.python)} Python pins in all)", f"{lock_s:.1f} s")
        )
        cold = timed(lambda spec=spec, lock=lock: images.ensure_image(spec, quiet, lock=lock, no_cache=True))
        cached = statistics.median(
            timed(lambda spec=spec, lock=lock: images.ensure_image(spec, quiet, lock=lock)) for _ in range(3)
        )
        rows += [
            (f"build, {len(packages)} package(s), --no-cache", f"{cold:.1f} s"),
            (f"build, {len(packages)} package(s), cached (median of 3)", f"{cached:.2f} s"),
        ]
    return rows


def connected(spec: ClusterSpec, folder: Path) -> HostConnections:
    return HostConnections(load_inventory(state_dir(folder, spec.name)), state_dir(folder, spec.name))


def start(spec: ClusterSpec, folder: Path, inventory: Inventory, script: Path, name: str) -> None:
    """What `gpufleet train --detach` does after its imports: connect to every host, start the run."""
    with connected(spec, folder) as group:
        jobs.start_run(Cluster(spec, inventory, group), script, [], name=name)


def checks(folder: Path, hosts: int, repeat: int) -> list[tuple[str, str]]:
    spec = load_spec(stack(folder, f"bench-env{hosts}", hosts, "docker", OCTET + 1))
    cluster_up(spec, folder)
    script = folder / "hello.py"
    script.write_text(HELLO)
    timings: dict[str, list[float]] = {key: [] for key in ("pre+", "pre-", "start+", "start-", "parity")}
    try:
        inventory = load_inventory(state_dir(folder, spec.name))
        with connected(spec, folder) as group:
            cluster = Cluster(spec, inventory, group)
            preflight.run_preflight(cluster)  # warm-up: page cache, first imports on every host
            for index in range(repeat):  # alternating: the machine's load hits both alike
                timings["pre+"].append(timed(lambda: preflight.run_preflight(cluster)))
                with mock.patch.object(preflight, "read_environments", lambda *_a, **_k: {}):
                    timings["pre-"].append(timed(lambda: preflight.run_preflight(cluster)))
                timings["parity"].append(timed(lambda: jobs.check_environment_parity(cluster)))
                for key, patched in (("start+", False), ("start-", True)):
                    name = f"bench-{'without' if patched else 'with'}-{index}"
                    skip = mock.patch.object(jobs, "check_environment_parity", lambda _c: None)
                    with skip if patched else contextlib.nullcontext():
                        timings[key].append(
                            timed(lambda name=name: start(spec, folder, inventory, script, name))
                        )
                jobs.follow_run(cluster, jobs.find_run(cluster, f"bench-with-{index}"))
                jobs.follow_run(cluster, jobs.find_run(cluster, f"bench-without-{index}"))
    finally:
        cluster_down(spec, folder, purge=True)
    med = {key: statistics.median(values) for key, values in timings.items()}
    return [
        (f"preflight, {hosts} hosts, with the environment check", f"{med['pre+']:.2f} s"),
        (f"preflight, {hosts} hosts, without it", f"{med['pre-']:.2f} s ({med['pre+'] / med['pre-']:.2f}x)"),
        (f"train's parity check alone, {hosts} hosts", f"{med['parity']:.2f} s"),
        (
            f"train's start (connect + start_run), {hosts} hosts, with the parity check",
            f"{med['start+']:.2f} s",
        ),
        (
            f"train's start, {hosts} hosts, without it",
            f"{med['start-']:.2f} s ({med['start+'] / med['start-']:.2f}x)",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--skip-builds", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the image cache, network namespaces, Docker daemons)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-") as temporary:
        folder = Path(temporary)
        (folder / "Pulumi.yaml").write_text("name: bench\nruntime: python\n")
        rows = [] if args.skip_builds else builds(folder)
        for hosts in args.hosts:
            rows += checks(folder, hosts, args.repeat)
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"(whole run {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
