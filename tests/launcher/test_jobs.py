"""The controller side of runs (start, follow, gang stop, records) against in-memory hosts."""

from __future__ import annotations

import io
import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
import pytest
import typer

from gpufleet.cli import launch_commands
from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory, InventoryHost
from gpufleet.launcher import jobs
from gpufleet.launcher.cluster import Cluster
from gpufleet.launcher.connections import CommandResult, ConnectionLost, GroupResult
from gpufleet.launcher.jobs import follow_run, host_state_file, log_tail, start_run, write_record
from gpufleet.launcher.runs import RECORD_FILE, HostState, RunRecord
from tests.conftest import stack_spec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V"
pytestmark = pytest.mark.timeout(30)


class FakeFile(io.BytesIO):
    def __init__(self, files: dict[str, bytes], path: str, mode: str) -> None:
        super().__init__(files.get(path, b"") if "r" in mode else b"")
        self.files, self.path, self.mode = files, path, mode

    def close(self) -> None:
        if "w" in self.mode and not self.closed:
            self.files[self.path] = self.getvalue()
        super().close()


class FakeSftp:
    def __init__(self, hosts: FakeHosts, name: str) -> None:
        self.hosts, self.name = hosts, name

    def _check(self) -> None:
        if self.name in self.hosts.dropped:
            raise paramiko.SSHException("Server connection dropped: ")

    def open(self, path: str, mode: str = "r") -> FakeFile:
        self._check()
        if "r" in mode and path not in self.hosts.files:
            raise FileNotFoundError(path)
        self.hosts.opened.append(path)
        return FakeFile(self.hosts.files, path, mode)

    def stat(self, path: str) -> Any:
        self._check()
        if path not in self.hosts.files:
            raise FileNotFoundError(path)
        return paramiko.SFTPAttributes.from_stat(type("S", (), {"st_size": len(self.hosts.files[path])})())

    def posix_rename(self, old: str, new: str) -> None:
        self.hosts.files[new] = self.hosts.files.pop(old)


class FakeHosts:
    """One shared file space for every host (a shared run folder); work runs one host at a time."""

    def __init__(self, names: list[str]) -> None:
        self.all = names
        self.files: dict[str, bytes] = {}
        self.opened: list[str] = []
        self.dropped: set[str] = set()
        self.unreachable: dict[str, str] = {}
        self.refuses: set[str] = set()  # hosts whose reconnect is refused

    @property
    def names(self) -> list[str]:
        return [name for name in self.all if name not in self.unreachable]

    def each(self, work: Callable[[str], Any], names: list[str] | None = None) -> GroupResult[Any]:
        group: GroupResult[Any] = GroupResult()
        for name in names if names is not None else self.names:
            try:
                group.results[name] = work(name)
            except Exception as error:
                group.errors[name] = error
        return group

    def drop(self, name: str, why: str) -> None:
        self.unreachable[name] = why

    def reconnect(self, name: str, timeout: float) -> BaseException | None:
        if name in self.refuses or name in self.dropped:
            return ConnectionRefusedError(111, "Connection refused")
        self.unreachable.pop(name, None)
        return None

    def sftp(self, name: str) -> FakeSftp:
        return FakeSftp(self, name)

    def run(self, name: str, command: str, timeout: float | None = None) -> CommandResult:
        if "/etc/gpufleet/environment.json" in command:  # train's parity check: every host as its image
            answer = {
                "manifest_digest": "sha256:" + "a" * 64,
                "live_digest": "sha256:" + "b" * 64,
                "differences": [],
            }
            return CommandResult(name, 0, json.dumps(answer) + "\n", "")
        return CommandResult(name, 0, "", "")


class FakeCluster(Cluster):
    """A cluster whose agent calls are answered by ``reply`` (and recorded)."""

    reply: Callable[[str, tuple[str, ...]], dict[str, object]]
    calls: list[tuple[str, ...]]

    def agent(self, name: str, *args: str, timeout: float | None = 60) -> dict[str, object]:
        self.calls.append((name, *args))
        return self.reply(name, args)

    def run_roots(self) -> dict[str, str]:
        return {name: self.location.root for name in self.names}

    def stops(self) -> list[str]:
        return [call[0] for call in self.calls if call[1] == "stop"]

    def state(self, name: str, record: RunRecord) -> dict[str, object]:
        raw = self.hosts.files.get(host_state_file(record, name))  # type: ignore[attr-defined]
        data: dict[str, object] = json.loads(raw) if raw else {}
        return data

    def set_state(self, name: str, record: RunRecord, **data: object) -> None:
        self.hosts.files[host_state_file(record, name)] = json.dumps(data).encode()  # type: ignore[attr-defined]


def make_cluster() -> FakeCluster:
    spec = stack_spec("local")
    inventory = Inventory(
        cluster=spec.name,
        provisioner="local",
        hosts=[
            InventoryHost(
                name=h.name, address=h.address, ssh_address="127.0.0.1", ssh_port=22, user="t", host_key=KEY
            )
            for h in spec.hosts
        ],
    )
    cluster = FakeCluster(spec, inventory, FakeHosts([h.name for h in spec.hosts]))  # type: ignore[arg-type]
    cluster.calls = []
    return cluster


def make_record(cluster: Cluster) -> RunRecord:
    return RunRecord(
        run="r1",
        cluster=cluster.spec.name,
        spec_hash="sha256:x",
        image_digest=None,
        script="train.py",
        args=[],
        command={},
        workdir="/w",
        hosts=cluster.names,
        nnodes=len(cluster.names),
        nproc_per_node=dict.fromkeys(cluster.names, 1),
        run_dir={name: cluster.location.run_dir("r1") for name in cluster.names},
        shared=True,
        started=1.0,
    )


def agent_stop_semantics(cluster: FakeCluster, record: RunRecord) -> None:
    """``stop`` settles a host that has not ended as the agent does; ``status`` reads the file."""
    lost: set[str] = set()
    polls = [0]

    def reply(name: str, args: tuple[str, ...]) -> dict[str, object]:
        if args[0] == "stop":
            if cluster.state(name, record).get("exit_code") is None:
                cluster.set_state(
                    name, record, state="stopped", exit_code=137, ended=9.0, reason="stopped (killed)"
                )
            return {"killed": 0, "left": 0}
        polls[0] += 1
        assert polls[0] < 100, "follow_run never ended"
        state = cluster.state(name, record)
        if state.get("exit_code") is not None:
            return state
        return {"state": "lost" if name in lost else "running"}

    cluster.reply = reply
    cluster.lost = lost  # type: ignore[attr-defined]


@pytest.fixture
def every_poll_asks_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "STATUS_EVERY_S", 0)


@pytest.mark.usefixtures("every_poll_asks_status")
def test_gang_stop_also_stops_a_lost_host_and_keeps_it_lost() -> None:
    cluster = make_cluster()
    record = make_record(cluster)
    agent_stop_semantics(cluster, record)
    first, second = cluster.names
    cluster.lost.add(first)  # type: ignore[attr-defined]  # its supervisor died; torchrun may live on
    cluster.set_state(first, record, state="running", pid=123, started=1.0)
    cluster.set_state(second, record, state="running", pid=124, started=1.0)
    lines: list[str] = []
    done = follow_run(cluster, record, write=lines.append, poll_s=0)
    assert sorted(cluster.stops()) == sorted(cluster.names)
    assert done.host_states == {first: "lost", second: "stopped"}
    assert done.first_failed == first
    assert any(f"host {first} lost" in line for line in lines)


@pytest.mark.usefixtures("every_poll_asks_status")
def test_a_host_that_ended_stopped_stops_the_run_everywhere() -> None:
    cluster = make_cluster()
    record = make_record(cluster)
    agent_stop_semantics(cluster, record)
    first, second = cluster.names
    cluster.set_state(
        first,
        record,
        state="stopped",
        pid=123,
        exit_code=143,
        ended=5.0,
        reason="stopped: ran past the 9 s limit",
    )
    cluster.set_state(second, record, state="running", pid=124, started=1.0)
    done = follow_run(cluster, record, poll_s=0)
    assert sorted(cluster.stops()) == sorted(cluster.names)
    # The host that ended first keeps its own end (the agent's stop must not rewrite it).
    assert cluster.state(first, record)["reason"] == "stopped: ran past the 9 s limit"
    assert done.state == "stopped"


def test_an_interrupt_while_launching_stops_the_run(tmp_path: Path) -> None:
    cluster = make_cluster()
    first, second = cluster.names

    def reply(name: str, args: tuple[str, ...]) -> dict[str, object]:
        if args[0] == "start" and name == second:
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM via the CLI's handler) mid-launch
        if args[0] == "status":
            return {"state": "stopped", "exit_code": 137, "ended": 2.0}
        return {"ok": True, "pid": 1}

    cluster.reply = reply
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    with pytest.raises(KeyboardInterrupt):
        start_run(cluster, script, [])
    assert "start" in [call[1] for call in cluster.calls if call[0] == first]
    assert sorted(cluster.stops()) == sorted(cluster.names)


def test_train_handles_sigterm_from_before_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    @contextmanager
    def fake_open(*_args: object) -> Iterator[object]:
        yield object()

    def fake_start(*_args: object) -> RunRecord:
        seen.append(signal.getsignal(signal.SIGTERM))
        raise KeyboardInterrupt  # what that handler raises; start_run stopped the run

    monkeypatch.setattr(launch_commands, "open_cluster", fake_open)
    monkeypatch.setattr(launch_commands, "start_run", fake_start)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(typer.Exit) as exit_info:
        launch_commands.train(Path("train.py"))
    assert exit_info.value.exit_code == 130
    assert seen == [launch_commands._raise_interrupt]
    assert signal.getsignal(signal.SIGTERM) == before


def test_every_record_write_uses_a_temp_file_of_its_own() -> None:
    cluster = make_cluster()
    record = make_record(cluster)
    write_record(cluster, record)
    write_record(cluster, record)
    temps = [path for path in cluster.hosts.opened if not path.endswith(f"/{RECORD_FILE}")]  # type: ignore[attr-defined]
    assert len(temps) == 2 and len(set(temps)) == 2
    assert all(f".{RECORD_FILE}.tmp" in path for path in temps)


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda c, r, n: jobs._read_json(c, n, host_state_file(r, n)), id="state-file"),
        pytest.param(lambda c, r, n: jobs.LogFollower(c, r, print)._read_new(n), id="log-follow"),
        pytest.param(lambda c, r, n: log_tail(c, r, n), id="log-tail"),
    ],
)
def test_a_dropped_connection_while_reading_is_a_clear_error(
    read: Callable[[Cluster, RunRecord, str], object],
) -> None:
    cluster = make_cluster()
    record = make_record(cluster)
    name = cluster.names[0]
    cluster.hosts.dropped.add(name)  # type: ignore[attr-defined]
    with pytest.raises(GpufleetError, match=f"{name}: SSH connection lost"):
        read(cluster, record, name)


def test_a_timed_out_read_is_a_lost_connection_not_a_missing_file(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = make_cluster()
    record = make_record(cluster)

    def hang(*_args: object) -> None:
        raise TimeoutError("timed out")  # what a read on a partitioned host ends in

    monkeypatch.setattr(FakeSftp, "open", hang)
    with pytest.raises(ConnectionLost):
        jobs.read_state(cluster, record, cluster.names[0])


def _lost_host_cluster(min_hosts: int | None) -> tuple[FakeCluster, RunRecord]:
    cluster = make_cluster()
    record = make_record(cluster).model_copy(update={"min_hosts": min_hosts})
    agent_stop_semantics(cluster, record)
    for name in cluster.names:
        cluster.set_state(name, record, state="running", pid=1, started=1.0)
    return cluster, record


@pytest.mark.usefixtures("every_poll_asks_status")
def test_a_host_whose_connection_drops_and_refuses_is_lost_and_the_run_stopped_on_the_others() -> None:
    cluster, record = _lost_host_cluster(None)
    first, second = cluster.names
    cluster.hosts.dropped.add(second)  # type: ignore[attr-defined]  # every process there died, sshd too
    lines: list[str] = []
    done = follow_run(cluster, record, write=lines.append, poll_s=0.01)
    assert cluster.stops() == [first]  # the reachable one; the lost one cannot be reached
    assert done.state == "failed"
    assert done.host_states == {first: "stopped", second: "lost"}
    assert done.lost_hosts == [second] and done.first_failed == second
    assert done.why is not None and "refuses new ones" in done.why
    assert any(f"host {second} lost" in line for line in lines)
    written = json.loads(cluster.hosts.files[f"{record.run_dir[first]}/{RECORD_FILE}"])  # type: ignore[attr-defined]
    assert written["state"] == "failed" and written["lost_hosts"] == [second]


def test_a_silent_host_is_lost_after_host_timeout_s() -> None:
    cluster, record = _lost_host_cluster(None)
    _, second = cluster.names
    spec = cluster.spec.model_copy(
        update={"training": cluster.spec.training.model_copy(update={"host_timeout_s": 1})}
    )
    cluster.spec = spec

    class Silent:
        def open(self, *_args: object) -> None:
            raise TimeoutError("timed out")

    sftp = cluster.hosts.sftp
    cluster.hosts.sftp = lambda name: Silent() if name == second else sftp(name)  # type: ignore[method-assign,assignment,return-value]
    cluster.hosts.reconnect = lambda name, timeout: TimeoutError("timed out")  # type: ignore[method-assign,attr-defined]
    started = time.monotonic()
    done = follow_run(cluster, record, poll_s=0.01)
    assert 1 <= time.monotonic() - started < 5
    assert done.host_states[second] == "lost"
    assert "not heard from for 1 s" in str(done.why)


def test_an_elastic_run_goes_on_without_a_lost_host_and_says_where_it_finished() -> None:
    cluster, record = _lost_host_cluster(1)
    first, second = cluster.names
    cluster.hosts.dropped.add(second)  # type: ignore[attr-defined]
    lines: list[str] = []
    polls = [0]
    original = jobs.read_state

    def finishes_later(c: Cluster, r: RunRecord, name: str) -> HostState | None:
        polls[0] += 1
        if polls[0] > 10:  # the survivor finishes a while after the loss
            cluster.set_state(first, record, state="succeeded", exit_code=0, ended=20.0)
        return original(c, r, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobs, "read_state", finishes_later)
        done = follow_run(cluster, record, write=lines.append, poll_s=0.01)
    assert cluster.stops() == []
    assert done.state == "succeeded"
    assert done.finished_hosts == [first] and done.lost_hosts == [second]
    assert done.first_failed is None
    assert any("the job re-forms on the 1 hosts left" in line for line in lines)


def test_losing_the_rendezvous_host_stops_even_an_elastic_run() -> None:
    cluster, record = _lost_host_cluster(1)
    first, second = cluster.names
    cluster.hosts.dropped.add(first)  # type: ignore[attr-defined]  # hosts[0]: the c10d store is there
    done = follow_run(cluster, record, poll_s=0.01)
    assert cluster.stops() == [second]
    assert done.state == "failed" and done.lost_hosts == [first]


def test_stop_with_a_host_unreachable_stops_the_others_and_records_it() -> None:
    cluster, record = _lost_host_cluster(None)
    first, second = cluster.names
    cluster.hosts.unreachable[second] = "timed out connecting"  # type: ignore[attr-defined]
    done = jobs.stop_run(cluster, record)
    assert cluster.stops() == [first]
    assert done.host_states == {first: "stopped", second: "unreachable"}
