"""Recovery: how fast training comes back from, or stops cleanly after, what clusters do. Needs root.

Real local clusters (process runtime: namespace hosts, real sshd, torchrun over
gloo, 1 CPU worker per host unless said) run the recovery tests' workload
(tests/launcher/workload/steps.py: an all-reduce per step, a checkpoint to
the NAS stand-in after every step) with the real `gpufleet train` CLI. Each
repeat does every scenario once, in turn, so the machine's load hits all
alike; each destructive scenario gets a fresh cluster.

- worker crash -> resumed (2 hosts x 2 workers, max_restarts): a worker exits
  at a planned step (its marker file's mtime is the moment); until the job's
  "resumed at step" line (workers re-joined, checkpoint read), then its next
  completed step (training again). Two crashes per repeat, one on each host.
- lost host (3 hosts): every process of node-2 is killed, sshd too; until
  the run is noticed lost (the controller's line, or with --detach the
  supervisors' line in a survivor's log) and until no process of the run is
  left on node-0 and node-1.
- partition (3 hosts): node-2's port on the LAN bridge goes down; until it is
  detected (the first "lost node-2" line of the controller or a survivor's
  supervisor), until node-2 has fenced itself (none of its run's processes
  left) and the survivors have stopped. Then the link comes back: nothing of
  the run may come back to life.
- elastic re-form (3 hosts, min_hosts 2): node-2 is killed; until the job
  says "resumed at step N world=2" and until its next completed step.

Side by side, "torchrun alone": the same torchrun command lines started by
hand over ssh (setsid, no gpufleet supervisor), the same faults, until the
survivors' processes are gone (capped: a hung run is killed at the cap).

Prints each sample as measured, then markdown tables of medians and maxima.

    .venv/bin/python bench/recovery.py [--repeat 5] [--host-timeout 30]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpufleet.cli.cluster_commands import ssh_argv  # noqa: E402
from gpufleet.derive.torchrun import RunSettings, torchrun_command  # noqa: E402
from tests.launcher.faults import STEP_RE, WORKLOAD, TrainingCluster, faulty_cluster  # noqa: E402

OCTETS = {"crash": 181, "lost": 182, "part": 183, "elastic": 184}
LOG_POLL_S = 0.02
STEP_S = "0.1"
RESUMED_RE = re.compile(r"steps: resumed at step \d+ world=(\d+)")
SURVIVORS = ("node-0", "node-1")
LOST = "node-2"


class BenchError(RuntimeError):
    """A scenario did not end as it must: its timings would mean nothing."""


# -- watching a run -------------------------------------------------------------------------


class Timeline:
    """Every line of a run's host logs and of the controller's output, stamped when first seen.

    Host logs are read from the NAS stand-in every 20 ms (source: the host's
    name); the controller's stdout as it comes (source: "controller"). Times
    are ``time.time()``, comparable with file mtimes.
    """

    def __init__(self, logs: Path, controller: subprocess.Popen[str] | None = None) -> None:
        self.logs = logs
        self.lines: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._threads = [threading.Thread(target=self._poll_logs, daemon=True)]
        if controller is not None and controller.stdout is not None:
            self._threads.append(threading.Thread(target=self._read, args=(controller,), daemon=True))
        for thread in self._threads:
            thread.start()

    def _add(self, source: str, line: str) -> None:
        with self._lock:
            self.lines.append((time.time(), source, line))

    def _read(self, controller: subprocess.Popen[str]) -> None:
        assert controller.stdout is not None
        for line in controller.stdout:
            self._add("controller", line.rstrip("\n"))

    def _poll_logs(self) -> None:
        while not self._done.is_set():
            for path in sorted(self.logs.glob("*.log")) if self.logs.is_dir() else []:
                offset = self._offsets.get(path, 0)
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
                self._offsets[path] = offset + len(data)
                *whole, rest = (self._partial.pop(path, b"") + data).split(b"\n")
                if rest:
                    self._partial[path] = rest
                for line in whole:
                    self._add(path.stem, line.decode("utf-8", "replace"))
            time.sleep(LOG_POLL_S)

    def close(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def first(
        self, pattern: re.Pattern[str], after: float, sources: tuple[str, ...] | None = None
    ) -> tuple[float, re.Match[str]] | None:
        with self._lock:
            lines = list(self.lines)
        for when, source, line in lines:
            found = pattern.search(line)
            if found and when >= after and (sources is None or source in sources):
                return when, found
        return None

    def wait_for(
        self,
        pattern: re.Pattern[str],
        after: float,
        timeout: float,
        sources: tuple[str, ...] | None = None,
    ) -> tuple[float, re.Match[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = self.first(pattern, after, sources)
            if hit is not None:
                return hit
            time.sleep(LOG_POLL_S)
        raise BenchError(f"no line matching {pattern.pattern!r} within {timeout:.0f} s")


@contextmanager
def training(
    cluster: TrainingCluster, run: str, steps: int, *extra: str, detach: bool = False
) -> Iterator[tuple[subprocess.Popen[str], Timeline]]:
    """``gpufleet train`` of the steps workload in the background, its timeline; waits until step 3."""
    argv = cluster.train_argv(
        run, "--steps", str(steps), "--step-s", STEP_S, "--checkpoint-dir", f"/checkpoints/{run}", *extra
    )
    if detach:
        argv.insert(argv.index("--name"), "--detach")
    controller = subprocess.Popen(
        argv, cwd=cluster.folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timeline = Timeline(cluster.runs() / run / "logs", controller)
    try:
        timeline.wait_for(STEP_RE, 0.0, timeout=180)
        timeline.wait_for(re.compile(r"steps: step 3/"), 0.0, timeout=60)
        yield controller, timeline
    finally:
        if controller.poll() is None and not detach:
            controller.wait(timeout=300)
        timeline.close()
        (cluster.folder / f"{run}.out").write_text(
            "\n".join(f"{t:.3f} {s} | {x}" for t, s, x in timeline.lines)
        )


@contextmanager
def by_hand(cluster: TrainingCluster, run: str, steps: int) -> Iterator[Timeline]:
    """The same torchrun lines as gpufleet's, started over ssh with setsid: no supervisor at all."""
    spec, inventory = cluster.spec, cluster.inventory
    run_dir = f"/checkpoints/gpufleet-runs/{run}"
    settings = RunSettings(
        run_id=run,
        script=str(WORKLOAD),
        script_args=("--steps", str(steps), "--step-s", STEP_S, "--checkpoint-dir", f"/checkpoints/{run}"),
        run_dir=run_dir,
    )
    for host in spec.hosts:
        entry = inventory.host(host.name)
        command = torchrun_command(spec, host, settings, entry.python, inventory.nccl_env.get(host.name))
        env = " ".join(f"{key}={shlex.quote(value)}" for key, value in command.env.items())
        log = f"{run_dir}/logs/{host.name}.log"
        # Only torchrun goes to the background (an "a && b &" list would keep the session open).
        line = (
            f"mkdir -p {run_dir}/logs && cd {run_dir} || exit 1; "
            f"setsid env {env} {shlex.join(command.argv)} > {log} 2>&1 < /dev/null &"
        )
        subprocess.run(ssh_argv(entry, cluster.state, [line]), check=True, timeout=30)
    timeline = Timeline(cluster.runs() / run / "logs")
    try:
        timeline.wait_for(re.compile(r"steps: step 3/"), 0.0, timeout=180)
        yield timeline
    finally:
        timeline.close()
        for pid in cluster.processes(run):  # whatever outlived the cap
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def gone_after(
    cluster: TrainingCluster, run: str, groups: dict[str, tuple[str, ...]], since: float, cap: float
) -> dict[str, float | None]:
    """Per group of hosts: seconds from ``since`` until no process of the run is left on them.

    The groups are watched together (not one after the other); None: still there ``cap`` s after.
    """
    gone: dict[str, float | None] = {}
    while len(gone) < len(groups):
        now = time.time()
        for name, hosts in groups.items():
            if name not in gone and not any(cluster.processes(run, host) for host in hosts):
                gone[name] = now - since
        if now - since > cap:
            return {name: gone.get(name) for name in groups}
        time.sleep(0.05)
    return gone


# -- the scenarios --------------------------------------------------------------------------


Sample = dict[str, float | None]


@dataclass
class Settings:
    folder: Path
    host_timeout_s: int
    cap_s: float
    serial: int = 0

    def next_run(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}-{self.serial}"

    def project(self, kind: str) -> Path:
        folder = self.folder / self.next_run(kind)
        folder.mkdir()
        return folder


def worker_crash(settings: Settings) -> list[Sample]:
    samples: list[Sample] = []
    with faulty_cluster(settings.project("crash"), "b10-crash", OCTETS["crash"], nproc=2) as cluster:
        cluster.training(max_restarts=4)
        run = "crash"
        crashes = {10: ("node-1", 1), 20: ("node-0", 0)}
        args = [f"--crash={step}:{host}:{rank}" for step, (host, rank) in crashes.items()]
        with training(cluster, run, 30, *args) as (controller, timeline):
            controller.wait(timeout=300)
        if controller.returncode != 0 or cluster.record(run)["state"] != "succeeded":
            raise BenchError(f"the crash run did not succeed: see {cluster.folder}/{run}.out")
        for step, (host, rank) in crashes.items():
            crashed = (cluster.runs().parent / run / f"crashed-{step}-{host}-{rank}").stat().st_mtime
            resumed = timeline.first(RESUMED_RE, crashed, ("node-0", "node-1"))
            again = timeline.first(STEP_RE, resumed[0], ("node-0", "node-1")) if resumed else None
            if resumed is None or again is None:
                raise BenchError(f"no resume after the crash at step {step}: see {cluster.folder}/{run}.out")
            samples.append({"resumed": resumed[0] - crashed, "training again": again[0] - crashed})
    return samples


def lost_host(settings: Settings, detach: bool) -> Sample:
    kind = "lost-detached" if detach else "lost"
    with faulty_cluster(settings.project(kind), "b10-lost", OCTETS["lost"], hosts=3) as cluster:
        run = kind
        with training(cluster, run, 600, detach=detach) as (controller, timeline):
            killed = cluster.kill_host(LOST)
            stopped = gone_after(cluster, run, {"survivors": SURVIVORS}, killed, settings.cap_s)["survivors"]
            if not detach:
                noticed = timeline.wait_for(re.compile(f"gpufleet: host {LOST} lost"), killed, 30)
                controller.wait(timeout=120)
        record = wait_for_record(cluster, run)
        if record["state"] != "failed" or record["lost_hosts"] != [LOST]:
            raise BenchError(f"{run}: record {record['state']}, lost {record['lost_hosts']}")
        if detach:  # no controller to say when; a survivor that lost it says so in its state file
            # (the other may have been stopped by that one's failure before it noticed itself)
            if not any(LOST in cluster.host_state(run, host)["lost_peers"] for host in SURVIVORS):
                raise BenchError(f"{run}: no survivor's state names {LOST} as lost")
            return {"survivors stopped": stopped}
        return {"noticed": noticed[0] - killed, "survivors stopped": stopped}


def wait_for_record(cluster: TrainingCluster, run: str) -> dict[str, object]:
    """The completed run record; a detached run's is completed by ``gpufleet status``."""
    record = cluster.record(run)
    if record.get("ended") is None:
        cluster.cli("status", run)
        record = cluster.record(run)
    return record


def lost_host_by_hand(settings: Settings) -> Sample:
    with faulty_cluster(settings.project("lost-hand"), "b10-lost", OCTETS["lost"], hosts=3) as cluster:
        run = settings.next_run("hand")
        with by_hand(cluster, run, 600):
            killed = cluster.kill_host(LOST)
            gone = gone_after(cluster, run, {"survivors": SURVIVORS}, killed, settings.cap_s)
            return {"survivors stopped": gone["survivors"]}


def partition(settings: Settings) -> Sample:
    with faulty_cluster(settings.project("part"), "b10-part", OCTETS["part"], hosts=3) as cluster:
        cluster.training(host_timeout_s=settings.host_timeout_s)
        run = "part"
        with training(cluster, run, 3000) as (controller, timeline):
            cut = cluster.link(LOST, up=False)
            try:
                gone = gone_after(
                    cluster, run, {"fenced": (LOST,), "survivors": SURVIVORS}, cut, settings.cap_s
                )
                lost_line = re.compile(f"gpufleet: (host {LOST} lost|stopped: lost {LOST})")
                detected = timeline.wait_for(lost_line, cut, 10, ("controller", *SURVIVORS))
                timeline.wait_for(re.compile(r"gpufleet: stopped \(fenced\)"), cut, 10, (LOST,))
                controller.wait(timeout=120)
            finally:
                cluster.link(LOST, up=True)
            time.sleep(3)
            if cluster.processes(run):
                raise BenchError(f"{run}: processes came back after the partition healed")
        record = cluster.record(run)
        if record["state"] != "failed" or LOST not in record["lost_hosts"]:
            raise BenchError(f"{run}: record {record['state']}, lost {record['lost_hosts']}")
        return {
            "detected": detected[0] - cut,
            "fenced": gone["fenced"],
            "survivors stopped": gone["survivors"],
        }


def partition_by_hand(settings: Settings) -> Sample:
    with faulty_cluster(settings.project("part-hand"), "b10-part", OCTETS["part"], hosts=3) as cluster:
        run = settings.next_run("hand")
        with by_hand(cluster, run, 3000):
            cut = cluster.link(LOST, up=False)
            try:
                gone = gone_after(
                    cluster, run, {"fenced": (LOST,), "survivors": SURVIVORS}, cut, settings.cap_s
                )
                return {"fenced": gone["fenced"], "survivors stopped": gone["survivors"]}
            finally:
                cluster.link(LOST, up=True)


def elastic(settings: Settings) -> Sample:
    with faulty_cluster(settings.project("elastic"), "b10-elastic", OCTETS["elastic"], hosts=3) as cluster:
        cluster.training(min_hosts=2, max_restarts=3)
        run = "elastic"
        with training(cluster, run, 200) as (controller, timeline):
            killed = cluster.kill_host(LOST)
            noticed = timeline.wait_for(re.compile(f"gpufleet: host {LOST} lost"), killed, 30)
            resumed = timeline.wait_for(RESUMED_RE, killed, 120, SURVIVORS)
            again = timeline.wait_for(STEP_RE, resumed[0], 60, SURVIVORS)
            if resumed[1].group(1) != "2" or again[1].group(2) != "2":
                raise BenchError(f"{run}: re-formed with world={resumed[1].group(1)}, not 2")
            controller.wait(timeout=300)
        record = cluster.record(run)
        if record["state"] != "succeeded" or record["finished_hosts"] != list(SURVIVORS):
            raise BenchError(f"{run}: record {record['state']}, finished on {record['finished_hosts']}")
        return {
            "noticed": noticed[0] - killed,
            "resumed": resumed[0] - killed,
            "training again": again[0] - killed,
        }


# -- the tables -----------------------------------------------------------------------------


def cell(values: list[float | None], cap: float, pick: Callable[[list[float]], float]) -> str:
    """``pick`` of the values, a value that never came (past the cap) counting as infinite."""
    picked = pick([math.inf if v is None else v for v in values])
    return f"> {cap:.0f}" if math.isinf(picked) else f"{picked:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--host-timeout", type=int, default=30, help="training.host_timeout_s (default 30)")
    parser.add_argument(
        "--cap", type=float, default=90, help="seconds after a fault that count as never (default 90)"
    )
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/recovery.py needs root (network namespaces, sshd, nft)", file=sys.stderr)
        return 2
    settings = Settings(
        Path(tempfile.mkdtemp(prefix="gpufleet-bench-recovery-")), options.host_timeout, options.cap
    )
    print(f"work folder: {settings.folder}", flush=True)
    scenarios: list[tuple[str, Callable[[], Sample | list[Sample]]]] = [
        ("worker crash -> resumed (2 hosts x 2 workers)", lambda: worker_crash(settings)),
        ("lost host, controller watching (3 hosts)", lambda: lost_host(settings, detach=False)),
        ("lost host, detached: supervisors alone (3 hosts)", lambda: lost_host(settings, detach=True)),
        ("lost host, torchrun alone (3 hosts)", lambda: lost_host_by_hand(settings)),
        (f"partition, host_timeout_s {options.host_timeout} (3 hosts)", lambda: partition(settings)),
        ("partition, torchrun alone (3 hosts)", lambda: partition_by_hand(settings)),
        ("elastic re-form, min_hosts 2 of 3", lambda: elastic(settings)),
    ]
    results: dict[str, list[Sample]] = {name: [] for name, _ in scenarios}
    for attempt in range(options.repeat):
        for name, scenario in scenarios:
            got = scenario()
            samples = got if isinstance(got, list) else [got]
            results[name].extend(samples)
            shown = "; ".join(
                ", ".join(f"{k} {'never' if v is None else f'{v:.2f} s'}" for k, v in s.items())
                for s in samples
            )
            print(f"[{attempt + 1}/{options.repeat}] {name}: {shown}", flush=True)

    cap = options.cap
    print("\n| scenario | n | metric | median s | max s |")
    print("|---|---:|---|---:|---:|")
    for name, samples in results.items():
        for metric in samples[0]:
            values = [s[metric] for s in samples]
            median = cell(values, cap, statistics.median)
            print(f"| {name} | {len(values)} | {metric} | {median} | {cell(values, cap, max)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
