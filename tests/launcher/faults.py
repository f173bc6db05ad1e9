"""A local cluster with the faults real clusters have, for the launcher tests and bench/recovery.py.

``with faulty_cluster(folder, "name", octet) as cluster:`` stands up a
process-runtime cluster (namespace hosts, real sshd, torchrun over gloo) with
a NAS stand-in for checkpoints; the ``TrainingCluster`` it yields changes the
stack's training settings, starts ``workload/steps.py`` (which checkpoints
every step), reads the run's record, states and logs, finds the run's
processes, and injects faults: ``kill_host`` (every process of the host dies,
sshd too) and ``link`` (the host's port on the LAN bridge down or up: a
partition).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from gpufleet.inventory import Inventory, state_dir
from gpufleet.local.hostproc import nas_source
from gpufleet.local.names import host_namespace, lan_namespace, lan_port
from gpufleet.spec import ClusterSpec
from tests.local.cluster import local_cluster

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")
WORKLOAD = Path(__file__).parent / "workload" / "steps.py"
STEP_RE = re.compile(r"steps: step (\d+)/\d+ world=(\d+)")


class TrainingCluster:
    """A running local cluster, its stack file and project folder: train on it, read its runs, break it."""

    def __init__(self, folder: Path, spec: ClusterSpec, inventory: Inventory, stack: Path) -> None:
        self.folder, self.spec, self.inventory, self.stack = folder, spec, inventory, stack
        self.name = spec.name
        self.state = state_dir(folder, spec.name)

    def training(self, **settings: Any) -> None:
        """Change the stack's training settings (the cluster stays as it is)."""
        config = yaml.safe_load(self.stack.read_text())
        config["config"]["gpufleet:cluster"].setdefault("training", {}).update(settings)
        self.stack.write_text(yaml.safe_dump(config, sort_keys=False))

    def cli(
        self, *args: str, stack: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """The real CLI from the project folder: ``args[0]`` with ``-f`` this stack (or ``stack``)."""
        return subprocess.run(
            [GPUFLEET, args[0], "-f", str(stack or self.stack), *args[1:]],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def train_argv(self, run: str, *script_args: str) -> list[str]:
        """``gpufleet train`` of the steps workload as run ``run``."""
        return [GPUFLEET, "train", "-f", str(self.stack), "--name", run, str(WORKLOAD), *script_args]

    def train_in_background(self, run: str, *script_args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.train_argv(run, *script_args),
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def runs(self) -> Path:
        """The controller's view of <checkpoints share>/gpufleet-runs (the NAS stand-in)."""
        return nas_source(self.state, "checkpoints") / "gpufleet-runs"

    def record(self, run: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.runs() / run / "run.json").read_text())
        return data

    def host_state(self, run: str, host: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.runs() / run / "hosts" / f"{host}.json").read_text())
        return data

    def log(self, run: str, host: str = "node-0") -> str:
        path = self.runs() / run / "logs" / f"{host}.log"
        return path.read_text() if path.exists() else ""

    def wait_for_step(self, run: str, step: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            steps = [int(m.group(1)) for m in STEP_RE.finditer(self.log(run))]
            if steps and max(steps) >= step:
                return
            time.sleep(0.2)
        raise AssertionError(f"{run} never reached step {step}: {self.log(run)[-2000:]}")

    def processes(self, run: str, host: str | None = None) -> list[int]:
        """Every live process of the run (all namespace hosts share this machine's pid space)."""
        needle = f"GPUFLEET_RUN_TAG={self.name}/{run}@{host or ''}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                zombie = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (OSError, IndexError):
                continue
            if not zombie and any(item.startswith(needle) for item in environ.split(b"\0")):
                found.append(int(entry))
        return found

    def wait_no_processes(self, run: str, host: str | None = None, timeout: float = 30) -> float:
        """Seconds until no process of the run is left (on ``host``); fails after ``timeout``."""
        started = time.monotonic()
        while self.processes(run, host):
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{run}: processes left on {host or 'some host'} after {timeout} s")
            time.sleep(0.1)
        return time.monotonic() - started

    def kill_host(self, host: str) -> float:
        """Every process of the host dies, sshd included (the namespace and its link stay).

        Returns when (``time.time()``) the first round of kills was sent.
        """
        namespace = host_namespace(self.name, host)
        killed_at = 0.0
        for _ in range(3):  # again: a process may have been forking
            pids = subprocess.run(
                ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True
            ).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            killed_at = killed_at or time.time()
            time.sleep(0.1)
        return killed_at

    def link(self, host: str, up: bool) -> float:
        """The host's port on the LAN bridge down (a partition) or up again; returns when (``time.time()``)."""
        port = lan_port(self.name, host)
        state = "up" if up else "down"
        subprocess.run(["ip", "-n", lan_namespace(self.name), "link", "set", port, state], check=True)
        return time.time()


@contextmanager
def faulty_cluster(
    folder: Path, name: str, octet: int, hosts: int = 2, nproc: int = 1
) -> Iterator[TrainingCluster]:
    """A process-runtime cluster on 10.<octet>.0.0/24, its project in ``folder``; always torn down."""
    (folder / "Pulumi.yaml").write_text("name: recovery-test\nruntime: python\n")
    with local_cluster(folder, name, octet, hosts=hosts, nproc=nproc) as (spec, inventory, stack):
        yield TrainingCluster(folder, spec, inventory, stack)
