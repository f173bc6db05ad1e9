"""What clusters do to training, for real: crashed workers, lost hosts, partitions, elastic runs.

Real local clusters (namespace hosts, real sshd, torchrun over gloo) running
``workload/steps.py``, which checkpoints every step to the NAS share. A host is
"lost" by killing every process in its namespace (sshd too); "partitioned" by
taking its port on the LAN bridge down. The destructive tests get a cluster of
their own (clusters come up in well under a second).

Clusters: t10-restarts (10.163.0.0/24), t10-lost (164), t10-part (165),
t10-elastic (166), t10-detached (167), t10-part3 (168).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.launcher.faults import STEP_RE, WORKLOAD, TrainingCluster, faulty_cluster

pytestmark = [needs_root("sshd", "nft", "ip"), pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def restarts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainingCluster]:
    with faulty_cluster(tmp_path_factory.mktemp("restarts"), "t10-restarts", 163, nproc=2) as project:
        yield project


def test_twenty_worker_crashes_anywhere_each_restart_the_group_from_its_checkpoint(
    restarts: TrainingCluster,
) -> None:
    restarts.training(max_restarts=40)
    # Crash k kills host k%2's local rank (k//2)%2 at step 2k: every worker of both hosts crashes.
    crashes = [f"{2 * k}:node-{k % 2}:{(k // 2) % 2}" for k in range(1, 21)]
    args = [f"--crash={c}" for c in crashes]
    result = restarts.cli(
        "train", "--name", "crash-loop", str(WORKLOAD), "--steps", "42", "--step-s", "0.05",
        "--checkpoint-dir", "/checkpoints/t10-crash-loop", *args, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    crashed = re.findall(r"crashing on purpose at step (\d+) on (node-\d) rank (\d)", result.stdout)
    assert len(crashed) == 20
    resumed = [int(step) for step in re.findall(r"steps: resumed at step (\d+) world=4", result.stdout)]
    # Every crash at step 2k resumed from the last checkpoint: step 2k-1 (every step checkpoints),
    # or 2k-2 when the crash stopped rank 0 while it was writing that one.
    assert len(resumed) >= 20, result.stdout[-4000:]
    for k in range(1, 21):
        assert {2 * k - 2, 2 * k - 1} & set(resumed), f"no resume after the crash at step {2 * k}: {resumed}"
    assert "steps: done steps=42 world=4" in result.stdout
    assert "connectFullMesh" not in result.stdout
    record = restarts.record("crash-loop")
    assert record["state"] == "succeeded"


def test_without_restarts_the_host_where_the_crash_began_is_named_every_time(
    restarts: TrainingCluster,
) -> None:
    restarts.training(max_restarts=0)
    named = []
    for i in range(20):
        crashing = f"node-{i % 2}"
        run = f"blame-{i}"
        result = restarts.cli(
            "train", "--name", run, "--nproc-per-node", "1", str(WORKLOAD), "--steps", "50",
            "--step-s", "0.02", "--checkpoint-dir", f"/checkpoints/t10-blame-{i}", f"--crash=3:{crashing}:0",
        )  # fmt: skip
        assert result.returncode != 0
        record = restarts.record(run)
        named.append((crashing, record["first_failed"], record["state"]))
        assert restarts.processes(run) == []
    wrong = [(i, expected, got) for i, (expected, got, _) in enumerate(named) if expected != got]
    assert wrong == [], f"wrong host named in {len(wrong)} of 20 runs: {wrong}"
    assert {state for _, _, state in named} == {"failed"}


def test_a_lost_host_stops_the_run_everywhere_within_10_s_and_completes_the_record(tmp_path: Path) -> None:
    with faulty_cluster(tmp_path, "t10-lost", 164) as project:
        run = "lost-1"
        controller = project.train_in_background(
            run, "--steps", "400", "--step-s", "0.1", "--checkpoint-dir", "/checkpoints/t10-lost"
        )
        project.wait_for_step(run, 3)
        project.kill_host("node-1")
        killed = time.monotonic()
        stopped_in = project.wait_no_processes(run, timeout=30)
        out, err = controller.communicate(timeout=60)
        assert stopped_in < 10, f"survivors still ran {stopped_in:.1f} s after the host was lost"
        assert controller.returncode != 0
        assert time.monotonic() - killed < 30
        assert "host node-1 lost: its SSH connection dropped and it refuses new ones" in out, out[-3000:]
        assert "host node-1 was lost" in err
        record = project.record(run)
        assert record["state"] == "failed"
        assert record["lost_hosts"] == ["node-1"]
        assert record["first_failed"] == "node-1"
        assert record["host_states"]["node-1"] == "lost"
        assert record["why"] and "node-1" in record["why"]
        assert record["ended"] is not None


@pytest.mark.parametrize(
    ("hosts", "name", "octet"),
    [(2, "t10-part", 165), (3, "t10-part3", 168)],
    ids=["2-hosts", "3-hosts"],
)
def test_a_partitioned_host_fences_itself_and_leaves_no_orphan_when_it_heals(
    tmp_path: Path, hosts: int, name: str, octet: int
) -> None:
    # The last host is cut off. With 3 hosts the two others still hear each other: they stop
    # because they lost it (fewer than min_hosts), and only the cut-off host fences.
    with faulty_cluster(tmp_path, name, octet, hosts=hosts) as project:
        timeout_s = 6
        project.training(host_timeout_s=timeout_s)
        run = "part-1"
        cut_off = f"node-{hosts - 1}"
        survivors = [f"node-{i}" for i in range(hosts - 1)]
        controller = project.train_in_background(
            run, "--steps", "600", "--step-s", "0.1", "--checkpoint-dir", "/checkpoints/t10-part"
        )
        project.wait_for_step(run, 3)
        project.link(cut_off, up=False)
        cut = time.monotonic()
        try:
            fenced_in = project.wait_no_processes(run, cut_off, timeout=timeout_s + 20)
            others_in = project.wait_no_processes(run, timeout=timeout_s + 20)
            out, _err = controller.communicate(timeout=60)
            assert fenced_in < timeout_s + 5 + 5, fenced_in  # detected within timeout + 5 s, then stopped
            state = project.host_state(run, cut_off)
            assert state["state"] == "stopped" and state["fenced"] is True, state
            assert "cannot reach any other host" in state["reason"]
            if hosts > 2:
                for survivor in survivors:
                    theirs = project.host_state(run, survivor)
                    assert theirs["fenced"] is False, theirs
                    # Stopped by their own finding (or the controller's stop), never by the fenced host.
                    assert cut_off not in theirs["reason"] or f"lost {cut_off}" in theirs["reason"], theirs
            assert controller.returncode != 0
            assert f"host {cut_off} lost: not heard from for 6 s" in out, out[-3000:]
            record = project.record(run)
            assert record["state"] == "failed" and cut_off in record["lost_hosts"]
            assert others_in < timeout_s + 10
        finally:
            project.link(cut_off, up=True)
        healed = time.monotonic()
        time.sleep(3)  # the partition healed: nothing of the run comes back to life
        assert project.processes(run) == []
        steps_after_heal = [int(m.group(1)) for m in STEP_RE.finditer(project.log(run))]
        assert healed - cut > timeout_s
        assert steps_after_heal  # it trained before the cut


def test_an_elastic_job_re_forms_on_the_survivors_and_says_where_it_finished(tmp_path: Path) -> None:
    with faulty_cluster(tmp_path, "t10-elastic", 166, hosts=3) as project:
        project.training(min_hosts=2, max_restarts=3)
        run = "elastic-1"
        controller = project.train_in_background(
            run, "--steps", "120", "--step-s", "0.1", "--checkpoint-dir", "/checkpoints/t10-elastic"
        )
        project.wait_for_step(run, 3)
        project.kill_host("node-2")
        out, err = controller.communicate(timeout=300)
        assert controller.returncode == 0, out[-4000:] + err
        assert "host node-2 lost" in out and "the job re-forms on the 2 hosts left" in out
        resumed = re.findall(r"steps: resumed at step (\d+) world=2", out)
        assert resumed, out[-4000:]
        assert "steps: done steps=120 world=2" in out
        assert re.search(r"succeeded on 2 of 3 hosts in [0-9.]+ s \(node-0, node-1\)", out), out[-1500:]
        assert "the job re-formed and finished on node-0, node-1" in out
        record = project.record(run)
        assert record["state"] == "succeeded"
        assert record["finished_hosts"] == ["node-0", "node-1"]
        assert record["lost_hosts"] == ["node-2"]
        assert project.processes(run) == []


def test_a_detached_run_with_a_lost_host_is_stopped_by_the_hosts_and_status_and_stop_still_work(
    tmp_path: Path,
) -> None:
    with faulty_cluster(tmp_path, "t10-detached", 167) as project:
        run = "detached-1"
        started = project.cli(
            "train", "--detach", "--name", run, str(WORKLOAD), "--steps", "400", "--step-s", "0.1",
            "--checkpoint-dir", "/checkpoints/t10-detached",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        project.wait_for_step(run, 3)
        project.kill_host("node-1")
        # No controller is watching: node-0's supervisor stops the run there by itself.
        assert project.wait_no_processes(run, timeout=30) < 10
        state = project.host_state(run, "node-0")
        assert state["lost_peers"] == ["node-1"], state

        status = project.cli("status", run)
        assert status.returncode == 1, status.stdout + status.stderr
        assert "cannot reach node-1" in status.stderr
        assert "nothing was started" not in status.stderr
        row = next(line for line in status.stdout.splitlines() if run in line)
        assert "failed" in row and "lost" in row, status.stdout
        record = project.record(run)
        assert record["state"] == "failed" and record["lost_hosts"] == ["node-1"]

        logs = project.cli("logs", run)
        assert logs.returncode == 1
        assert re.search(r"^node-0 \| \[rank0\]:steps: step 3/400", logs.stdout, re.MULTILINE), logs.stdout

        stopped = project.cli("stop", run)
        assert stopped.returncode == 1
        assert "cannot reach node-1" in stopped.stderr
        assert "nothing was started" not in stopped.stderr
