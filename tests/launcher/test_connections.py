"""Connections pin host keys (RejectPolicy, loaded known_hosts) before any connect; errors read well."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory, InventoryHost
from gpufleet.launcher.connections import (
    GroupResult,
    HostConnections,
    answered,
    check_known_hosts,
    describe_connect_error,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V"


def inventory() -> Inventory:
    host = InventoryHost(
        name="node-0", address="10.0.0.11", ssh_address="127.0.0.1", ssh_port=1, user="trainer", host_key=KEY
    )
    return Inventory(cluster="c", provisioner="local", hosts=[host])


def test_each_connection_rejects_unknown_keys_and_forwards_nothing(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text(inventory().hosts[0].known_hosts_line() + "\n")
    connection = HostConnections(inventory(), tmp_path)._connection(inventory().hosts[0])
    assert isinstance(connection.client._policy, paramiko.RejectPolicy)
    assert connection.client.get_host_keys().lookup("[127.0.0.1]:1") is not None
    assert connection.forward_agent is False
    assert connection.connect_kwargs["allow_agent"] is False
    assert connection.connect_kwargs["look_for_keys"] is False
    assert connection.config.load_ssh_configs is False


def test_an_unreachable_host_is_named_and_nothing_opens(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text(inventory().hosts[0].known_hosts_line() + "\n")
    (tmp_path / "id_ed25519").write_text("unused\n")
    with pytest.raises(
        GpufleetError, match=r"node-0 \(127.0.0.1:1\): connection refused.*|cannot reach 1 of 1"
    ):
        HostConnections(inventory(), tmp_path, connect_timeout=2).open()


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        pytest.param(
            paramiko.BadHostKeyException("h", paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()),
            "does not match the pinned key",
            id="mismatch",
        ),
        pytest.param(
            paramiko.SSHException("Server '[h]:1' not found in known_hosts"),
            "no pinned key",
            id="unknown-host",
        ),
        pytest.param(paramiko.AuthenticationException("x"), "key was refused", id="auth"),
        pytest.param(TimeoutError("timed out"), "timed out", id="timeout"),
        pytest.param(ConnectionRefusedError(111, "refused"), "connection refused", id="refused"),
        pytest.param(
            paramiko.ssh_exception.NoValidConnectionsError(
                {("10.0.0.1", 22): ConnectionRefusedError(111, "x")}
            ),
            "connection refused",
            id="refused-as-paramiko-says-it",
        ),
    ],
)
def test_connect_errors_say_what_to_do(error: BaseException, needle: str) -> None:
    assert needle in describe_connect_error(error)


class DroppedConnection:
    """A connection whose transport went away: what paramiko raises mid-use."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def run(self, *_args: object, **_kwargs: object) -> None:
        raise self.error

    def sftp(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(paramiko.SSHException("Server connection dropped: "), id="dropped"),
        pytest.param(EOFError(), id="eof"),
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="reset"),
    ],
)
@pytest.mark.parametrize("use", ["run", "sftp"])
def test_a_dropped_connection_is_a_clear_error_not_a_traceback(
    tmp_path: Path, error: BaseException, use: str
) -> None:
    hosts = HostConnections(inventory(), tmp_path)
    hosts._connections = {"node-0": DroppedConnection(error)}  # type: ignore[dict-item]
    with pytest.raises(GpufleetError, match=r"node-0: SSH connection lost .*gpufleet status"):
        if use == "run":
            hosts.run("node-0", "true")
        else:
            hosts.sftp("node-0")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        pytest.param("[10.0.0.1]:22 ssh-ed25519 AAAA%%%notbase64", "not valid base64", id="base64"),
        pytest.param("[10.0.0.1]:22 ssh-ed25519", "expected '<host> <key type> <base64 key>'", id="short"),
        pytest.param("[10.0.0.1]:22 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "does not parse", id="truncated-key"),
        pytest.param("[10.0.0.1]:22 ssh-nonsense AAAA", "unknown key type", id="key-type"),
    ],
)
def test_a_damaged_known_hosts_line_is_named(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(inventory().hosts[0].known_hosts_line() + "\n# a comment\n\n" + line + "\n")
    with pytest.raises(GpufleetError, match=r"known_hosts, line 4: not a known_hosts entry") as info:
        check_known_hosts(path)
    assert needle in str(info.value) and "re-run gpufleet up" in str(info.value)


def test_a_known_hosts_that_is_not_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(GpufleetError, match=r"line 1: not a known_hosts entry \(not text\)"):
        check_known_hosts(path)


def test_open_checks_known_hosts_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("garbage line that is not a key\n")
    (tmp_path / "id_ed25519").write_text("unused\n")
    with pytest.raises(GpufleetError, match="line 1"):
        HostConnections(inventory(), tmp_path, connect_timeout=2).open()


def test_without_require_all_the_reachable_hosts_are_used_and_the_others_named(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text(inventory().hosts[0].known_hosts_line() + "\n")
    (tmp_path / "id_ed25519").write_text("unused\n")
    # The only host is unreachable: with nothing to act on, it is an error all the same.
    with pytest.raises(GpufleetError, match="cannot reach 1 of 1 hosts, so nothing was done"):
        HostConnections(inventory(), tmp_path, connect_timeout=2, require_all=False).open()


def test_a_group_result_keeps_every_hosts_result_or_error() -> None:
    group: GroupResult[int] = GroupResult(results={"a": 1}, errors={"b": ValueError("boom")})
    assert group.get("a") == 1
    with pytest.raises(ValueError, match="boom"):
        group.get("b")
    with pytest.raises(GpufleetError, match="b: ValueError: boom"):
        group.raise_first()
    assert GroupResult(results={"a": 1}).raise_first() == {"a": 1}


def test_a_refused_connect_counts_as_an_answer_a_timeout_does_not() -> None:
    refused = paramiko.ssh_exception.NoValidConnectionsError(
        {("10.0.0.1", 22): ConnectionRefusedError(111, "x")}
    )
    assert answered(refused) and answered(ConnectionRefusedError(111, "x"))
    assert not answered(TimeoutError("timed out"))
