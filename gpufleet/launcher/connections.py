"""SSH connections to every host of a cluster: pinned host keys, reused, one fan-out.

Fabric's ``Connection`` trusts any host key on first use (``AutoAddPolicy``);
here each connection loads the inventory's ``known_hosts`` and switches to
paramiko's ``RejectPolicy`` before it connects, so a host whose key does not
match is refused. No agent, no ``~/.ssh`` keys, no ``~/.ssh/config``: only the
inventory's key. Every host is connected (in parallel) before anything runs.
Commands that start something need every host (one unreachable host fails the
command and nothing is started); commands that look at or stop a run act on
the hosts they reach and report the others (``open(require_all=False)``).

``each`` is the one fan-out: work on every host in parallel, and a
``GroupResult`` with each host's result or error (as Fabric's ``GroupResult``).
"""

from __future__ import annotations

import base64
import binascii
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, ThreadException
from paramiko.pkey import UnknownKeyType

from gpufleet.errors import GpufleetError
from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, Inventory, InventoryHost

DEFAULT_CONNECT_TIMEOUT_S = 10.0
# An SFTP read that gets no answer for this long fails (a partitioned host must not hang a poll).
SFTP_TIMEOUT_S = 5.0
T = TypeVar("T")

# What paramiko/invoke raise when an open connection drops mid-command
# ("Server connection dropped", EOF on the transport, a reset socket).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (paramiko.SSHException, EOFError, ThreadException)
# ... and, where no file is involved, any socket error.
_LOST_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, OSError)


class ConnectionLost(GpufleetError):
    """A host's SSH connection dropped (or stopped answering) while in use."""

    def __init__(self, name: str, error: BaseException) -> None:
        detail = str(error).strip() or type(error).__name__
        super().__init__(
            f"{name}: SSH connection lost ({detail}). Is the host up and reachable? A run that was "
            "already started keeps running there: check it with gpufleet status, stop it with gpufleet stop"
        )
        self.host = name
        self.detail = detail


def connection_lost(name: str, error: BaseException) -> ConnectionLost:
    """The error for a host whose SSH connection dropped while in use."""
    return ConnectionLost(name, error)


class LineSink:
    """A stream that writes whole lines, each prefixed (``gpu-3 | ...``), under one lock for all hosts."""

    def __init__(self, prefix: str, write: Callable[[str], object], lock: threading.Lock) -> None:
        self.prefix, self._write, self._lock = prefix, write, lock
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            with self._lock:
                self._write("".join(f"{self.prefix}{line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self._partial:
            with self._lock:
                self._write(f"{self.prefix}{self._partial}\n")
            self._partial = ""


@dataclass(frozen=True)
class CommandResult:
    host: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class GroupResult(Generic[T]):
    """Every host's outcome of one fan-out: its result, or the error it raised."""

    results: dict[str, T] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)

    @property
    def succeeded(self) -> dict[str, T]:
        return self.results

    @property
    def failed(self) -> dict[str, Exception]:
        return self.errors

    def get(self, name: str) -> T:
        """One host's result; its error if it failed."""
        if name in self.errors:
            raise self.errors[name]
        return self.results[name]

    def raise_first(self) -> dict[str, T]:
        """Every result, or the first error (a non-gpufleet one as a clear GpufleetError)."""
        for name, error in sorted(self.errors.items()):
            if isinstance(error, GpufleetError):
                raise error
            raise GpufleetError(f"{name}: {type(error).__name__}: {error}") from error
        return self.results


def connection_config() -> Config:
    # load_ssh_configs: a user's ~/.ssh/config must not redirect or re-key cluster hosts.
    return Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})


def _underlying(error: BaseException) -> BaseException:
    """paramiko wraps a failed TCP connect in NoValidConnectionsError (one error per address)."""
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError) and error.errors:
        errors = list(error.errors.values())
        if all(type(e) is type(errors[0]) for e in errors):
            return errors[0]
    return error


def describe_connect_error(error: BaseException) -> str:
    """One line a user can act on, for what paramiko/socket raised while connecting."""
    error = _underlying(error)
    if isinstance(error, paramiko.BadHostKeyException):
        return (
            "host key does not match the pinned key in known_hosts (a different machine, or it was "
            "rebuilt: re-run gpufleet up / gpufleet inventory); refusing to connect"
        )
    if isinstance(error, paramiko.SSHException) and "known_hosts" in str(error):
        return "host has no pinned key in known_hosts; refusing to connect"
    if isinstance(error, paramiko.AuthenticationException):
        return "the inventory's key was refused (is it in ssh.authorized_keys on the host?)"
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out connecting (host down, or a firewall drops SSH from here?)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is sshd running on that port?)"
    return f"{type(error).__name__}: {error}"


def answered(error: BaseException) -> bool:
    """The host answered but would not let us in (refused, reset, no sshd banner): not just silent."""
    error = _underlying(error)
    return isinstance(error, (ConnectionRefusedError, ConnectionResetError, EOFError)) or (
        isinstance(error, paramiko.SSHException) and "banner" in str(error).lower()
    )


def check_known_hosts(path: Path) -> None:
    """Every line of ``path`` is a known_hosts entry paramiko can use; else an error naming the line."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise GpufleetError(f"cannot read {path}: {error}") from None
    for number, raw in enumerate(lines, 1):
        problem: str | None
        try:
            line = raw.decode().strip()
        except UnicodeDecodeError:
            problem = "not text"
        else:
            if not line or line.startswith("#"):
                continue
            problem = _known_hosts_problem(line)
        if problem:
            raise GpufleetError(
                f"{path}, line {number}: not a known_hosts entry ({problem}); the file is damaged: "
                "re-run gpufleet up (local) or gpufleet inventory (Pulumi) to rewrite it"
            )


def _known_hosts_problem(line: str) -> str | None:
    fields = line.split()
    if len(fields) < 3:
        return "expected '<host> <key type> <base64 key>'"
    key_type, data = fields[1], fields[2]
    try:
        key_bytes = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    try:
        paramiko.PKey.from_type_string(key_type, key_bytes)
    except UnknownKeyType:
        return f"unknown key type {key_type!r}"
    except Exception as error:  # paramiko raises several kinds for damaged key data
        return f"the {key_type} key does not parse ({type(error).__name__})"
    return None


class HostConnections:
    """Open SSH connections to the hosts of an inventory, used from one command for every step."""

    def __init__(
        self,
        inventory: Inventory,
        state_folder: Path,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        require_all: bool = True,
    ) -> None:
        self.inventory = inventory
        self.state_folder = state_folder
        self.connect_timeout = connect_timeout
        self.require_all = require_all
        self.hosts = list(inventory.hosts)
        self._connections: dict[str, Connection] = {}
        self.unreachable: dict[str, str] = {}  # host name -> why
        self._lock = threading.Lock()
        # Read once, not per connection: at hundreds of hosts, each client parsing the whole
        # known_hosts file (and the key file) again was quadratic in the cluster's size.
        self._pinned: paramiko.HostKeys | None = None
        self._key: dict[str, Any] | None = None

    def _credentials(self) -> tuple[paramiko.HostKeys, dict[str, Any]]:
        """The pinned host keys and the login key (as paramiko's connect argument), read once."""
        if self._pinned is None or self._key is None:
            known_hosts = self.state_folder / KNOWN_HOSTS_FILE
            self._pinned = paramiko.HostKeys(str(known_hosts) if known_hosts.is_file() else None)
            try:
                self._key = {"pkey": paramiko.PKey.from_path(self.state_folder / KEY_FILE)}
            except (paramiko.SSHException, OSError, ValueError):
                # Unreadable here: let each connect report it, as it would without this cache.
                self._key = {"key_filename": str(self.state_folder / KEY_FILE)}
        return self._pinned, self._key

    # -- connecting --------------------------------------------------------------------

    def _connection(self, host: InventoryHost, timeout: float | None = None) -> Connection:
        pinned, key = self._credentials()
        seconds = timeout or self.connect_timeout
        connection = Connection(
            host=host.ssh_address,
            user=host.user,
            port=host.ssh_port,
            config=connection_config(),
            connect_timeout=seconds,
            forward_agent=False,
            connect_kwargs={
                **key,
                "allow_agent": False,
                "look_for_keys": False,
                "banner_timeout": seconds,
                "auth_timeout": seconds,
            },
        )
        # Pin before the first connect: Fabric's constructor installed AutoAddPolicy. Only this
        # host's own entry: any other key is refused.
        name = host.ssh_address if host.ssh_port == 22 else f"[{host.ssh_address}]:{host.ssh_port}"
        mine = connection.client.get_host_keys()
        for key_type, host_key in (pinned.lookup(name) or {}).items():
            mine.add(name, key_type, host_key)
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return connection

    def _where(self, name: str) -> str:
        host = self.inventory.host(name)
        return f"{name} ({host.ssh_address}:{host.ssh_port})"

    def open(self) -> HostConnections:
        for name in (KEY_FILE, KNOWN_HOSTS_FILE):
            if not (self.state_folder / name).is_file():
                raise GpufleetError(f"{self.state_folder / name} is missing: re-run gpufleet up / inventory")
        check_known_hosts(self.state_folder / KNOWN_HOSTS_FILE)
        connections = {host.name: self._connection(host) for host in self.hosts}

        def connect(name: str) -> None:
            connections[name].open()

        opened = self._fan_out(connect, list(connections))
        failures = {name: describe_connect_error(error) for name, error in opened.errors.items()}
        if failures and (self.require_all or len(failures) == len(connections)):
            for connection in connections.values():
                connection.close()
            lines = "; ".join(f"{self._where(name)}: {why}" for name, why in sorted(failures.items()))
            outcome = "so nothing was started on any host" if self.require_all else "so nothing was done"
            raise GpufleetError(
                f"cannot reach {len(failures)} of {len(self.hosts)} hosts, {outcome}: {lines}"
            )
        for name in failures:
            connections.pop(name).close()
        self._connections = connections
        self.unreachable = failures
        return self

    def reconnect(self, name: str, timeout: float) -> BaseException | None:
        """Try to open ``name`` again; None when it worked, else what connecting raised."""
        connection = self._connection(self.inventory.host(name), timeout)
        try:
            connection.open()
        except Exception as error:  # reported to the caller, which decides
            connection.close()
            return error
        with self._lock:
            old = self._connections.get(name)
            self._connections[name] = connection
            self.unreachable.pop(name, None)
        if old is not None:
            old.close()
        return None

    def drop(self, name: str, why: str) -> None:
        """Forget a connection that failed mid-use (a later ``reconnect`` may bring it back)."""
        with self._lock:
            connection = self._connections.pop(name, None)
            self.unreachable[name] = why
        if connection is not None:
            threading.Thread(target=connection.close, daemon=True).start()

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections = {}

    def __enter__(self) -> HostConnections:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- using ---------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The hosts that are connected now, in inventory order."""
        return [host.name for host in self.hosts if host.name in self._connections]

    def _get(self, name: str) -> Connection:
        connection = self._connections.get(name)
        if connection is None:
            raise ConnectionLost(name, OSError(self.unreachable.get(name, "not connected")))
        return connection

    def sftp(self, name: str) -> paramiko.SFTPClient:
        try:
            sftp: paramiko.SFTPClient = self._get(name).sftp()
            sftp.get_channel().settimeout(SFTP_TIMEOUT_S)  # type: ignore[union-attr]
        except _LOST_ERRORS as error:
            raise connection_lost(name, error) from error
        return sftp

    def run(self, name: str, command: str, timeout: float | None = None) -> CommandResult:
        """Run a shell command on one host; never raises for a non-zero exit."""
        try:
            result = self._get(name).run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        except CommandTimedOut as error:
            return CommandResult(name, 124, error.result.stdout, f"timed out after {timeout} s")
        except _LOST_ERRORS as error:
            raise connection_lost(name, error) from error
        return CommandResult(name, int(result.exited), str(result.stdout), str(result.stderr))

    def stream(self, name: str, command: str, out: LineSink, err: LineSink) -> int:
        """Run a shell command on one host, its output to ``out``/``err`` as it comes; the exit code."""
        try:
            result = self._get(name).run(
                command, hide=True, warn=True, in_stream=False, out_stream=out, err_stream=err
            )
        except _LOST_ERRORS as error:
            raise connection_lost(name, error) from error
        finally:
            out.flush()
            err.flush()
        return int(result.exited)

    def run_all(self, commands: dict[str, str], timeout: float | None = None) -> dict[str, CommandResult]:
        """One command per host (host name -> command), all hosts at once; the first error raises."""
        return self.each(lambda name: self.run(name, commands[name], timeout), list(commands)).raise_first()

    def each(self, work: Callable[[str], T], names: list[str] | None = None) -> GroupResult[T]:
        """``work(host name)`` on every connected (or the named) host in parallel."""
        return self._fan_out(work, names if names is not None else self.names)

    @staticmethod
    def _fan_out(work: Callable[[str], T], names: list[str]) -> GroupResult[T]:
        group: GroupResult[T] = GroupResult()
        if not names:
            return group

        def one(name: str) -> tuple[str, T | None, Exception | None]:
            try:
                return name, work(name), None
            except Exception as error:  # every host's error is reported in the group
                return name, None, error

        with ThreadPoolExecutor(max_workers=min(32, len(names))) as pool:
            for name, result, error in pool.map(one, names):
                if error is not None:
                    group.errors[name] = error
                else:
                    group.results[name] = result  # type: ignore[assignment]
        return group
