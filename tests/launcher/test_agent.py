"""The host-side agent, run for real as local processes: detach, state, stop, gang stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpufleet.launcher import agent

AGENT = agent.__file__
pytestmark = pytest.mark.timeout(60)


def call(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, AGENT, *args], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def start(run_dir: Path, host: str, tag: str, *argv: str, max_s: str = "0") -> int:
    (run_dir / "code").mkdir(parents=True, exist_ok=True)
    return int(call("start", str(run_dir), host, tag, max_s, "--", *argv)["pid"])


def wait_state(run_dir: Path, host: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = call("status", str(run_dir), host)
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{host} never reached {states}: {status}")


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    return f"agent-test-{os.getpid()}-{request.node.name}"


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


def test_a_failed_peer_stops_this_host_through_the_shared_run_folder(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "sleep", "300")
    started = time.monotonic()
    (tmp_path / "hosts" / "h1.json").write_text(json.dumps({"exit_code": 1, "ended": time.time()}))
    status = wait_state(tmp_path, "h0", {"stopped"})
    assert time.monotonic() - started < 10
    assert "h1 failed" in status["reason"]
    assert agent.tagged_pids(tag) == []


def test_the_time_limit_stops_a_job(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "sleep", "300", max_s="1")
    status = wait_state(tmp_path, "h0", {"stopped"})
    assert "limit" in status["reason"]


def test_a_run_cannot_be_started_twice_on_a_host(tmp_path: Path, tag: str) -> None:
    start(tmp_path, "h0", tag, "true")
    again = call("start", str(tmp_path), "h0", tag, "0", "--", "true")
    assert "already started" in again["error"]


def test_a_supervisor_killed_outright_shows_as_lost(tmp_path: Path, tag: str) -> None:
    pid = start(tmp_path, "h0", tag, "sleep", "300")
    os.kill(pid, 9)
    assert wait_state(tmp_path, "h0", {"lost"})["state"] == "lost"
    call("stop", str(tmp_path), "h0", tag, "2")
    assert agent.tagged_pids(tag) == []


def test_concurrent_starts_of_one_run_start_it_once(tmp_path: Path, tag: str) -> None:
    (tmp_path / "code").mkdir()
    command = [sys.executable, AGENT, "start", str(tmp_path), "h0", tag, "0", "--", "sleep", "300"]
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
            json.dumps({"pid": stranger.pid, "tag": tag, "started": 1.0})
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
