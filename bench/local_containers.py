"""The docker runtime: image builds (cold, cached), up/down of 2 and 4 hosts, and training in
containers vs the process runtime, side by side in one run. Needs root.

Goals (issue: the local cluster runs the real training containers): a cached 2-host up under
30 s; training in containers within 10% of the process runtime.

    .venv/bin/python bench/local_containers.py [--repeat 3] [--cold]

--cold builds the base and the image into a fresh, temporary cache (minutes) before the rest.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.local import cluster_down, cluster_up, images  # noqa: E402
from gpufleet.local.keys import generate_ed25519  # noqa: E402
from gpufleet.spec import load_spec  # noqa: E402

OCTET = 244
GPUFLEET = str(Path(sys.executable).parent / "gpufleet")
EXAMPLE = ROOT / "examples" / "intent_classifier" / "train.py"
TRAIN_SECONDS = re.compile(r"train_seconds=([0-9.]+)")


def config(name: str, hosts: int, runtime: str, octet: int = OCTET) -> dict[str, object]:
    net = f"10.{octet}.0"
    return {
        "name": name,
        "provisioner": "local",
        "local": {"runtime": runtime},
        "image": {"name": "registry.example.com/ml/bench-train"},
        "ssh": {"authorized_keys": [generate_ed25519().public_line("bench")], "admin_cidrs": [f"{net}.1/32"]},
        "network": {"cluster_cidr": f"{net}.0/24", "fabric": "ethernet"},
        "training": {"nproc_per_node": 2},
        "nas": [
            {"name": "data", "server": f"{net}.250", "export": "/d", "mount": "/data", "read_only": True},
            {"name": "checkpoints", "server": f"{net}.250", "export": "/c", "mount": "/checkpoints"},
        ],
        "hosts": [
            {"name": f"node-{i}", "address": f"{net}.{11 + i}", "gpus": 0, "ifname": "eth0"}
            for i in range(hosts)
        ],
    }


def stack(folder: Path, name: str, hosts: int, runtime: str, octet: int = OCTET) -> Path:
    path = folder / f"Pulumi.{name}.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": config(name, hosts, runtime, octet)}}))
    return path


def timed(work: object) -> float:
    started = time.monotonic()
    work()  # type: ignore[operator]
    return time.monotonic() - started


def builds(folder: Path, cold: bool) -> list[tuple[str, str]]:
    spec = load_spec(stack(folder, "bench-build", 2, "docker"))
    rows = []
    if cold:
        with tempfile.TemporaryDirectory(prefix="gpufleet-cold-cache-") as cache:
            os.environ[images.CACHE_ENV] = cache
            try:
                _, steps = images.ensure_image(spec, print)
            finally:
                del os.environ[images.CACHE_ENV]
        rows += [(f"{s.name}, cold", f"{s.seconds:.1f} s") for s in steps]
    seconds = [timed(lambda: images.ensure_image(spec, lambda _: None)) for _ in range(3)]
    rows.append(("base + image, cached (median of 3)", f"{statistics.median(seconds):.2f} s"))
    return rows


def up_down(folder: Path, hosts: int, repeat: int) -> tuple[float, float]:
    spec = load_spec(stack(folder, f"bench-c{hosts}", hosts, "docker"))
    cluster_up(spec, folder)  # warm-up: loads the image into each host's data-root once
    cluster_down(spec, folder, purge=True)
    ups, downs = [], []
    for _ in range(repeat):
        ups.append(timed(lambda: cluster_up(spec, folder)))
        downs.append(timed(lambda: cluster_down(spec, folder, purge=True)))
    return statistics.median(ups), statistics.median(downs)


def train_once(folder: Path, path: Path) -> tuple[float, float]:
    """(wall time of `gpufleet train`, the example's own train_seconds), from no checkpoint."""
    fresh = f"/checkpoints/bench-{uuid.uuid4().hex[:8]}"  # on the NAS: a run never resumes another's
    started = time.monotonic()
    result = subprocess.run(
        [GPUFLEET, "train", "-f", str(path), str(EXAMPLE), "--epochs", "8", "--checkpoint-dir", fresh],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - started
    found = TRAIN_SECONDS.search(result.stdout)
    if result.returncode != 0 or not found or "epochs=0->8" not in result.stdout:
        raise SystemExit(f"training failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return wall, float(found.group(1))


def training(folder: Path, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """Both clusters up at once (subnets of their own); runs alternate, so load hits both alike."""
    paths = {
        "docker": stack(folder, "bench-td", 2, "docker", OCTET),
        "process": stack(folder, "bench-tp", 2, "process", OCTET + 1),
    }
    specs = {runtime: load_spec(path) for runtime, path in paths.items()}
    results: dict[str, list[tuple[float, float]]] = {"docker": [], "process": []}
    try:
        for spec in specs.values():
            cluster_up(spec, folder)
        for path in paths.values():
            train_once(folder, path)  # warm-up: page cache, first torch import
        for _ in range(repeat):
            for runtime, path in paths.items():
                results[runtime].append(train_once(folder, path))
    finally:
        for spec in specs.values():
            cluster_down(spec, folder, purge=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, Docker daemons)")
    with tempfile.TemporaryDirectory(prefix="gpufleet-bench-") as temporary:
        folder = Path(temporary)
        (folder / "Pulumi.yaml").write_text("name: bench\nruntime: python\n")
        rows = builds(folder, args.cold)
        for hosts in (2, 4):
            up, down = up_down(folder, hosts, args.repeat)
            rows += [
                (f"up, {hosts} hosts, cached images", f"{up:.1f} s"),
                (f"down, {hosts} hosts", f"{down:.1f} s"),
            ]
        results = training(folder, args.repeat)
    for name, value in rows:
        print(f"| {name} | {value} |")
    medians = {
        k: (statistics.median(w for w, _ in v), statistics.median(t for _, t in v))
        for k, v in results.items()
    }
    for runtime, (wall, train) in medians.items():
        print(
            f"| training, {runtime} runtime: wall / train_seconds (median of {args.repeat}) | {wall:.1f} s / {train:.1f} s |"
        )
    ratio_wall = medians["docker"][0] / medians["process"][0]
    ratio_train = medians["docker"][1] / medians["process"][1]
    print(f"| containers / process | wall {ratio_wall:.2f}x, train_seconds {ratio_train:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
