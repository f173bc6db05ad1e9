"""The host-side agent, run for real as local processes: detach, state, stop, gang stop, heartbeats.

Heartbeat tests give each "host" its own loopback address (127.0.0.x), so
several supervisors bind the same UDP port on one machine, and play the
peers themselves with a socket of their own where that is simpler.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpufleet.hostscripts import agent

AGENT = agent.__file__
HOSTSCRIPTS = Path(AGENT).parent
pytestmark = pytest.mark.timeout(60)


def call(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, AGENT, *args], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def config(run_dir: Path, host: str, tag: str, max_s: str = "0", **extra: Any) -> str:
    return json.dumps(
        {"run_dir": str(run_dir), "host": host, "tag": tag, "max_s": max_s, "run": tag, **extra}
    )


def start(run_dir: Path, host: str, tag: str, *argv: str, max_s: str = "0", **extra: Any) -> int:
    (run_dir / "code").mkdir(parents=True, exist_ok=True)
    return int(call("start", config(run_dir, host, tag, max_s, **extra), "--", *argv)["pid"])


def wait_state(run_dir: Path, host: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = call("status", str(run_dir), host)
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{host} never reached {states}: {status}")


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"agent-test-{os.getpid()}-{request.node.name}"
    yield name
    for pid in agent.tagged_pids(name):  # whatever a failed test left behind
        os.kill(pid, 9)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakePeer:
    """A peer supervisor: beats ``running`` from its own loopback address until told to stop."""

    def __init__(self, run: str, host: str, address: str, port: int, to: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.run, self.host, self.to, self.port = run, host, to, port
        self.beating = threading.Event()
        self.beating.set()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.closed.is_set():
            if self.beating.is_set():
                beat = json.dumps({"run": self.run, "host": self.host, "state": "running"}).encode()
                self.sock.sendto(beat, (self.to, self.port))
            time.sleep(0.3)

    def close(self) -> None:
        """The peer's supervisor dies: its port closes (the host itself still answers)."""
        self.closed.set()
        self.thread.join()
        self.sock.close()


def peers_config(port: int, names: list[str], timeout_s: int, min_hosts: int) -> dict[str, Any]:
    return {
        "peers": {name: f"127.0.0.{i + 1}" for i, name in enumerate(names)},
        "beat_port": port,
        "host_timeout_s": timeout_s,
        "min_hosts": min_hosts,
        "rdzv_host": names[0],
    }


@pytest.mark.parametrize(
    ("script", "state", "code"),
    [
        pytest.param("echo hello", "succeeded", 0, id="succeeds"),
        pytest.param("echo hello; exit 3", "failed", 3, id="fails"),
    ],
)
def test_job_runs_detached_and_records_its_exit(
    tmp_path: Path, tag: str, script: str, state: str, code: int
) -> None:
    pid = start(tmp_path, "h0", tag, "sh", "-c", script)
    assert os.getsid(pid) == pid  # its own session: the SSH session ending does not touch it
    status = wait_state(tmp_path, "h0", {"succeeded", "failed"})
    assert (status["state"], status["exit_code"]) == (state, code)
    assert (tmp_path / "logs" / "h0.log").read_text().startswith("hello\n")


def test_stop_leaves_no_process_of_the_run(tmp_path: Path, tag: str) -> None:
    # A grandchild in its own session, as torchrun starts its workers: only the tag finds it.
    start(tmp_path, "h0", tag, "sh", "-c", "setsid sleep 300 & sleep 300")
    deadline = time.monotonic() + 10
    while len(agent.tagged_pids(tag)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(agent.tagged_pids(tag)) >= 3
    result = call("stop", str(tmp_path), "h0", tag, "8")
    assert result["left"] == 0
    assert agent.tagged_pids(tag) == []
    assert call("status", str(tmp_path), "h0")["state"] == "stopped"


@pytest.mark.parametrize(
    ("peer_reason", "expected"),
    [
        (None, "stopped: host h1 failed"),
        ("failed", "stopped: host h1 failed"),
        ("failed: lost h2 (not heard from for 30 s)", "stopped: host h1 failed (failed: lost h2 (not heard"),
    ],
    ids=["no-reason", "plain", "passes-on-why"],
)
def test_a_failed_peer_stops_this_host_through_the_shared_run_folder(
    tmp_path: Path, tag: str, peer_reason: str | None, expected: str
) -> None:
    start(tmp_path, "h0", tag, "sleep", "300")
    started = time.monotonic()
    peer = {"state": "failed", "exit_code": 1, "ended": time.time()}
    (tmp_path / "hosts" / "h1.json").write_text(
        json.dumps(peer | ({"reason": peer_reason} if peer_reason else {}))
    )
    status = wait_state(tmp_path, "h0", {"stopped"})
    assert time.monotonic() - started < 10
    assert status["reason"].startswith(expected), status["reason"]
    assert agent.tagged_pids(tag) == []


def test_a_job_that_breaks_as_a_peer_dies_says_which_peer_was_lost(tmp_path: Path, tag: str) -> None:
    # The peer's supervisor and this host's job end at the same moment (its workers' deaths broke
    # our collectives): the job's failure is recorded as caused by the lost peer.
    port = free_udp_port()
    trigger = tmp_path / "peer-died"
    peer = FakePeer(tag, "h1", "127.0.0.2", port, "127.0.0.1")
    try:
        job = f"while [ ! -e {trigger} ]; do sleep 0.05; done; exit 1"
        start(tmp_path, "h0", tag, "sh", "-c", job, **peers_config(port, ["h0", "h1"], 30, 2))
        time.sleep(2)  # they hear each other
        peer.close()
        trigger.touch()
        status = wait_state(tmp_path, "h0", {"failed"})
    finally:
        peer.close() if not peer.closed.is_set() else None
    assert status["exit_code"] == 1
    assert status["lost_peers"] == ["h1"]
    assert status["reason"].startswith("failed: lost h1 (its supervisor is gone"), status["reason"]


def test_the_time_limit_stops_a_job(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "sleep", "300", max_s="1")
    status = wait_state(tmp_path, "h0", {"stopped"})
    assert "limit" in status["reason"]


def test_a_run_cannot_be_started_twice_on_a_host(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "true")
    again = call("start", config(tmp_path, "h0", tag), "--", "true")
    assert "already started" in again["error"]


def test_a_supervisor_killed_outright_shows_as_lost(tmp_path: Path, tag: str) -> None:
    pid = start(tmp_path, "h0", tag, "sleep", "300")
    os.kill(pid, 9)
    assert wait_state(tmp_path, "h0", {"lost"})["state"] == "lost"
    call("stop", str(tmp_path), "h0", tag, "2")
    assert agent.tagged_pids(tag) == []


def test_concurrent_starts_of_one_run_start_it_once(tmp_path: Path, tag: str) -> None:
    (tmp_path / "code").mkdir()
    command = [sys.executable, AGENT, "start", config(tmp_path, "h0", tag), "--", "sleep", "300"]
    try:
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(8)]
        results = [json.loads(proc.communicate()[0]) for proc in procs]
        assert sum("pid" in result for result in results) == 1, results
        assert all("already started" in r["error"] for r in results if "pid" not in r)
    finally:
        call("stop", str(tmp_path), "h0", tag, "2")
    assert agent.tagged_pids(tag) == []


def test_a_reused_pid_is_neither_reported_running_nor_signalled(tmp_path: Path, tag: str) -> None:
    # The supervisor died; its pid now belongs to an unrelated process (no run tag).
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        (tmp_path / "hosts").mkdir()
        (tmp_path / "hosts" / "h0.json").write_text(
            json.dumps({"pid": stranger.pid, "tag": tag, "started": 1.0, "state": "running"})
        )
        assert call("status", str(tmp_path), "h0")["state"] == "lost"
        call("stop", str(tmp_path), "h0", tag, "1")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_start_records_the_tag_that_status_checks(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "sleep", "300")
    try:
        assert json.loads((tmp_path / "hosts" / "h0.json").read_text())["tag"] == tag
        assert call("status", str(tmp_path), "h0")["state"] == "running"
    finally:
        call("stop", str(tmp_path), "h0", tag, "2")


def test_the_first_worker_exit_is_recorded_to_name_where_a_failure_began(tmp_path: Path, tag: str) -> None:
    # Two "workers" (children of the job): one dies at once, the other 1.5 s later.
    script = "sleep 0.5 & sleep 2 & wait; exit 3"
    before = time.time()
    start(tmp_path, "h0", tag, "sh", "-c", script)
    status = wait_state(tmp_path, "h0", {"failed"})
    assert status["failed_at"] is not None
    assert before + 0.4 < status["failed_at"] < status["ended"] - 1.0


def test_a_peer_whose_supervisor_died_stops_this_host_in_seconds(tmp_path: Path, tag: str) -> None:
    port = free_udp_port()
    peer = FakePeer(tag, "h1", "127.0.0.2", port, "127.0.0.1")
    try:
        start(tmp_path, "h0", tag, "sleep", "300", **peers_config(port, ["h0", "h1"], 30, 2))
        time.sleep(2)  # they hear each other
        assert call("status", str(tmp_path), "h0")["state"] == "running"
        peer.close()
        gone = time.monotonic()
        status = wait_state(tmp_path, "h0", {"stopped"})
    finally:
        peer.close() if not peer.closed.is_set() else None
    # Far sooner than host_timeout_s (30 s): a closed port answers.
    assert time.monotonic() - gone < 8
    assert "lost h1" in status["reason"] and "supervisor is gone" in status["reason"]
    assert status["fenced"] is False
    assert agent.tagged_pids(tag) == []


def test_a_host_that_hears_no_peer_fences_itself(tmp_path: Path, tag: str) -> None:
    port = free_udp_port()
    started = time.monotonic()
    # h1 never answers (a partition: no beats, no refusals).
    start(tmp_path, "h0", tag, "sleep", "300", **peers_config(port, ["h0", "h1"], 3, 2))
    status = wait_state(tmp_path, "h0", {"stopped"}, timeout=20)
    assert 3 <= time.monotonic() - started < 3 + 6
    assert "fenced" in status["reason"] and "cannot reach any other host" in status["reason"]
    assert status["fenced"] is True
    assert agent.tagged_pids(tag) == []


@pytest.mark.parametrize(
    ("silent_after", "fenced", "reason"),
    [
        # A partition: the peers' last beats came a little apart, so their timeouts run out apart.
        ({"h1": 0.0, "h2": 0.8}, True, "stopped (fenced): cannot reach any other host (h1 silent for"),
        ({"h1": 0.8, "h2": 0.0}, True, "stopped (fenced): cannot reach any other host (h1 silent for"),
        # One peer went silent, the other still beats: this host is not the one cut off.
        ({"h1": 0.0}, False, "stopped: lost h1 (h1: not heard from for 4 s); 2 of 3 hosts remain"),
    ],
    ids=["cut-off-h1-first", "cut-off-h2-first", "one-peer-silent"],
)
def test_a_host_cut_off_from_every_peer_fences_whichever_peer_times_out_first(
    tmp_path: Path, tag: str, silent_after: dict[str, float], fenced: bool, reason: str
) -> None:
    port = free_udp_port()
    peers = {
        name: FakePeer(tag, name, f"127.0.0.{i + 2}", port, "127.0.0.1")
        for i, name in enumerate(["h1", "h2"])
    }
    try:
        start(tmp_path, "h0", tag, "sleep", "300", **peers_config(port, ["h0", "h1", "h2"], 4, 3))
        time.sleep(2)  # they hear each other
        assert call("status", str(tmp_path), "h0")["state"] == "running"
        previous = 0.0
        for name, delay in sorted(silent_after.items(), key=lambda item: item[1]):
            time.sleep(delay - previous)
            previous = delay
            peers[name].beating.clear()
        status = wait_state(tmp_path, "h0", {"stopped"}, timeout=20)
    finally:
        for peer in peers.values():
            peer.close()
    assert status["fenced"] is fenced
    assert status["reason"].startswith(reason), status["reason"]
    assert agent.tagged_pids(tag) == []


def test_a_fenced_host_does_not_wait_out_the_stop_grace_for_a_job_that_ignores_sigterm(
    tmp_path: Path, tag: str
) -> None:
    # torchrun on a cut-off host hangs in its graceful shutdown (the store is unreachable):
    # here a job that ignores SIGTERM. Fencing kills it after FENCE_GRACE_S, not STOP_GRACE_S.
    port = free_udp_port()
    started = time.monotonic()
    start(
        tmp_path, "h0", tag, "sh", "-c", "trap '' TERM; sleep 300",
        **peers_config(port, ["h0", "h1"], 3, 2),
    )  # fmt: skip
    status = wait_state(tmp_path, "h0", {"stopped"}, timeout=20)
    assert status["fenced"] is True
    assert time.monotonic() - started < 3 + agent.STOP_GRACE_S - 1
    assert agent.tagged_pids(tag) == []


def test_losing_the_rendezvous_host_stops_the_others(tmp_path: Path, tag: str) -> None:
    port = free_udp_port()
    rdzv = FakePeer(tag, "h0", "127.0.0.1", port, "127.0.0.2")
    other = FakePeer(tag, "h2", "127.0.0.3", port, "127.0.0.2")
    try:
        start(tmp_path, "h1", tag, "sleep", "300", **peers_config(port, ["h0", "h1", "h2"], 30, 2))
        time.sleep(2)
        rdzv.close()
        status = wait_state(tmp_path, "h1", {"stopped"})
    finally:
        for peer in (rdzv, other):
            if not peer.closed.is_set():
                peer.close()
    assert "the rendezvous host h0 was lost" in status["reason"]


def test_an_elastic_host_restarts_its_workers_when_a_peer_is_lost(tmp_path: Path, tag: str) -> None:
    port = free_udp_port()
    stays = FakePeer(tag, "h1", "127.0.0.2", port, "127.0.0.1")
    goes = FakePeer(tag, "h2", "127.0.0.3", port, "127.0.0.1")
    try:
        # The "workers" are the two sleeps; the job ends when they are gone (as torchrun
        # would start new ones; here the job just ends).
        start(tmp_path, "h0", tag, "sh", "-c", "sleep 300 & sleep 300 & wait", **peers_config(
            port, ["h0", "h1", "h2"], 30, 2
        ))  # fmt: skip
        time.sleep(2)
        goes.close()
        status = wait_state(tmp_path, "h0", {"succeeded", "stopped", "failed"})
    finally:
        for peer in (stays, goes):
            if not peer.closed.is_set():
                peer.close()
    assert status["state"] == "succeeded", status
    assert status["lost_peers"] == ["h2"]
    assert (
        "re-forming the job without it (restarted 2 local workers)"
        in (tmp_path / "logs" / "h0.log").read_text()
    )


def test_two_real_supervisors_hear_each_other_and_a_failure_stops_the_other(tmp_path: Path, tag: str) -> None:
    port = free_udp_port()
    peers = peers_config(port, ["h0", "h1"], 30, 2)
    # Separate run folders: only the heartbeats carry h1's failure to h0.
    start(tmp_path / "a", "h0", tag + "-a", "sleep", "300", **{**peers, "run": tag})
    start(tmp_path / "b", "h1", tag + "-b", "sh", "-c", "sleep 2; exit 4", **{**peers, "run": tag})
    assert wait_state(tmp_path / "b", "h1", {"failed"})["exit_code"] == 4
    status = wait_state(tmp_path / "a", "h0", {"stopped"}, timeout=10)
    assert "host h1 failed" in status["reason"]


def test_host_scripts_import_only_the_standard_library() -> None:
    scripts = sorted(p for p in HOSTSCRIPTS.glob("*.py") if p.name != "__init__.py")
    assert {p.name for p in scripts} >= {"agent.py", "hostcheck.py", "probe.py"}
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{script.name}: relative import"
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", (
                    f"{script.name} imports {module}"
                )
