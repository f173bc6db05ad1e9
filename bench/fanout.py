"""Fan-out: one trivial command on every host, launcher vs pdsh vs a serial ssh loop; launch overhead.

Part 1, on local clusters of 2, 4 and 8 hosts (needs root), `true` on all hosts:
- launcher, cold: open pinned connections to every host (parallel), run, close;
- launcher, warm: run on connections that are already open (what a command
  that does several steps pays for every step after the first);
- `pdsh -R ssh`, and a serial `ssh` loop, with the same key and pinned host keys;
- three steps (like preflight, launch, status) on one set of connections vs
  three commands that each connect anew.

Part 2, on the 2-host cluster: the intent classifier (2 hosts x 2 workers) by
`gpufleet train` vs the same torchrun command lines started by hand with
`ssh` in parallel; the launcher's overhead in percent.

Prints markdown tables (medians). Run: .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.derive.torchrun import RunSettings, torchrun_command  # noqa: E402
from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, Inventory, state_dir  # noqa: E402
from gpufleet.launcher.connections import HostConnections  # noqa: E402
from gpufleet.local import cluster_down, cluster_up  # noqa: E402
from gpufleet.local.keys import generate_ed25519  # noqa: E402
from gpufleet.spec import ClusterSpec, load_spec  # noqa: E402

SIZES = (2, 4, 8)
REPEATS = 7
TRAIN_REPEATS = 3
EXAMPLE = ROOT / "examples" / "intent_classifier" / "train.py"
GPUFLEET = str(Path(sys.executable).parent / "gpufleet")


def stack(folder: Path, hosts: int) -> Path:
    net = f"10.{170 + hosts}.0"
    config: dict[str, Any] = {
        "name": f"b6-fan{hosts}",
        "provisioner": "local",
        "local": {"runtime": "process"},
        "image": {"name": "registry.example.com/ml/bench"},
        "ssh": {"authorized_keys": [generate_ed25519().public_line("bench")], "admin_cidrs": [f"{net}.1/32"]},
        "network": {"cluster_cidr": f"{net}.0/24", "fabric": "ethernet"},
        "training": {"nproc_per_node": 2},
        "nas": [
            {"name": "checkpoints", "server": f"{net}.250", "export": "/export/ck", "mount": "/checkpoints"}
        ],
        "hosts": [
            {"name": f"node-{i}", "address": f"{net}.{11 + i}", "gpus": 0, "ifname": "eth0"}
            for i in range(hosts)
        ],
    }
    path = folder / f"Pulumi.{config['name']}.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": config}}, sort_keys=False))
    return path


def median_s(work: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ssh_options(folder: Path, port: int) -> list[str]:
    return [
        "-i", str(folder / KEY_FILE),
        "-o", f"UserKnownHostsFile={folder / KNOWN_HOSTS_FILE}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-p", str(port),
    ]  # fmt: skip


def fanout_row(inventory: Inventory, folder: Path) -> dict[str, float]:
    hosts = inventory.hosts
    port, user = hosts[0].ssh_port, hosts[0].user
    options = ssh_options(folder, port)

    def check(done: subprocess.CompletedProcess[bytes]) -> None:
        if done.returncode != 0:
            raise RuntimeError(done.stderr.decode())

    def launcher_cold() -> None:
        with HostConnections(inventory, folder) as group:
            assert all(r.ok for r in group.run_all(dict.fromkeys(group.names, "true")).values())

    def pdsh() -> None:
        env = dict(os.environ, PDSH_SSH_ARGS=" ".join(shlex.quote(o) for o in options) + " -l%u %h")
        targets = ",".join(h.ssh_address for h in hosts)
        check(
            subprocess.run(
                ["pdsh", "-R", "ssh", "-l", user, "-w", targets, "true"], env=env, capture_output=True
            )
        )

    def serial_ssh() -> None:
        for host in hosts:
            check(
                subprocess.run(["ssh", *options, f"{user}@{host.ssh_address}", "true"], capture_output=True)
            )

    row = {
        "launcher cold": median_s(launcher_cold),
        "pdsh -R ssh": median_s(pdsh),
        "serial ssh": median_s(serial_ssh),
    }
    with HostConnections(inventory, folder) as group:
        commands = dict.fromkeys(group.names, "true")
        row["launcher warm"] = median_s(lambda: group.run_all(commands))
        row["3 steps, one connect"] = median_s(lambda: [group.run_all(commands) for _ in range(3)])
    row["3 steps, 3 connects"] = median_s(lambda: [launcher_cold() for _ in range(3)], repeats=3)
    return row


def train_overhead(
    spec: ClusterSpec, inventory: Inventory, project: Path, stack_file: Path
) -> dict[str, float]:
    """gpufleet train vs the same torchrun lines over plain ssh, started in parallel (medians)."""
    folder = state_dir(project, spec.name)
    options = ssh_options(folder, inventory.hosts[0].ssh_port)
    launcher: list[float] = []
    by_hand: list[float] = []
    for attempt in range(TRAIN_REPEATS):
        args = ["--epochs", "6", "--no-export"]
        started = time.perf_counter()
        done = subprocess.run(
            [GPUFLEET, "train", "-f", str(stack_file), "--name", f"bench-{attempt}", str(EXAMPLE), *args,
             "--checkpoint-dir", f"/checkpoints/bench-launcher-{attempt}"],
            cwd=project, capture_output=True, text=True, check=False,
        )  # fmt: skip
        launcher.append(time.perf_counter() - started)
        (project / f"launcher-{attempt}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"gpufleet train failed: see {project}/launcher-{attempt}.log")

        run = RunSettings(
            run_id=f"hand-{attempt}",
            script=str(EXAMPLE),
            script_args=(*args, "--checkpoint-dir", f"/checkpoints/bench-hand-{attempt}"),
            run_dir=f"/checkpoints/hand-{attempt}",
        )
        started = time.perf_counter()
        procs = []
        for host in spec.hosts:
            entry = inventory.host(host.name)
            command = torchrun_command(spec, host, run, entry.python)
            line = " ".join(
                ["env", *(f"{k}={shlex.quote(v)}" for k, v in command.env.items()), shlex.join(command.argv)]
            )
            log = (project / f"hand-{attempt}-{host.name}.log").open("w")
            procs.append(
                subprocess.Popen(
                    ["ssh", *options, f"{entry.user}@{entry.ssh_address}", line],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        codes = [proc.wait() for proc in procs]
        by_hand.append(time.perf_counter() - started)
        if any(codes):
            raise RuntimeError(f"by-hand torchrun failed: {codes}: see {project}/hand-{attempt}-*.log")
    return {"launcher": statistics.median(launcher), "by hand": statistics.median(by_hand)}


def main() -> int:
    project = Path(tempfile.mkdtemp(prefix="gpufleet-bench-fanout-"))
    (project / "Pulumi.yaml").write_text("name: bench\nruntime: python\n")
    rows: dict[int, dict[str, float]] = {}
    overhead: dict[str, float] = {}
    for size in SIZES:
        stack_file = stack(project, size)
        spec = load_spec(stack_file)
        try:
            inventory = cluster_up(spec, project)
            folder = state_dir(project, spec.name)
            rows[size] = fanout_row(inventory, folder)
            print(f"{size} hosts: " + ", ".join(f"{k} {v:.3f} s" for k, v in rows[size].items()), flush=True)
            if size == 2:
                overhead = train_overhead(spec, inventory, project, stack_file)
                print(f"training: {overhead}", flush=True)
        finally:
            cluster_down(spec, project)

    columns = list(next(iter(rows.values())))
    print("\n| hosts | " + " | ".join(f"{c} s" for c in columns) + " |")
    print("|------:|" + "|".join("-" * (len(c) + 3) + ":" for c in columns) + "|")
    for size, row in rows.items():
        print(f"| {size} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    extra = overhead["launcher"] - overhead["by hand"]
    print("\n| 2 hosts x 2 workers, 6 epochs | wall s |")
    print("|---|---:|")
    print(f"| torchrun by hand (ssh in parallel) | {overhead['by hand']:.1f} |")
    print(f"| gpufleet train (sync, detach, watch) | {overhead['launcher']:.1f} |")
    print(f"| overhead | {extra:+.1f} s ({100 * extra / overhead['by hand']:+.0f}%) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
