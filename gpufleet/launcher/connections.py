"""SSH connections to every host of a cluster: pinned host keys, all or nothing, reused.

Fabric's ``Connection`` trusts any host key on first use (``AutoAddPolicy``);
here each connection loads the inventory's ``known_hosts`` and switches to
paramiko's ``RejectPolicy`` before it connects, so a host whose key does not
match is refused. No agent, no ``~/.ssh`` keys, no ``~/.ssh/config``: only the
inventory's key. Every host is connected (in parallel) before anything runs;
one unreachable host fails the whole command and nothing is started.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut, ThreadException

from gpufleet.errors import GpufleetError
from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, Inventory, InventoryHost

DEFAULT_CONNECT_TIMEOUT_S = 10.0
T = TypeVar("T")

# What paramiko/invoke raise when an open connection drops mid-command
# ("Server connection dropped", EOF on the transport, a reset socket).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (paramiko.SSHException, EOFError, ThreadException)
# ... and, where no file is involved, any socket error.
_LOST_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, OSError)


def connection_lost(name: str, error: BaseException) -> GpufleetError:
    """The error for a host whose SSH connection dropped while in use."""
    detail = str(error).strip() or type(error).__name__
    return GpufleetError(
        f"{name}: SSH connection lost ({detail}). Is the host up and reachable? A run that was "
        "already started keeps running there: check it with gpufleet status, stop it with gpufleet stop"
    )


@dataclass(frozen=True)
class CommandResult:
    host: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def connection_config() -> Config:
    # load_ssh_configs: a user's ~/.ssh/config must not redirect or re-key cluster hosts.
    return Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}})


def describe_connect_error(error: BaseException) -> str:
    """One line a user can act on, for what paramiko/socket raised while connecting."""
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


class HostConnections:
    """Open SSH connections to all hosts of an inventory, used from one command for every step."""

    def __init__(
        self,
        inventory: Inventory,
        state_folder: Path,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self.inventory = inventory
        self.state_folder = state_folder
        self.connect_timeout = connect_timeout
        self.hosts = list(inventory.hosts)
        self._connections: dict[str, Connection] = {}

    # -- connecting --------------------------------------------------------------------

    def _connection(self, host: InventoryHost) -> Connection:
        key = self.state_folder / KEY_FILE
        connection = Connection(
            host=host.ssh_address,
            user=host.user,
            port=host.ssh_port,
            config=connection_config(),
            connect_timeout=self.connect_timeout,
            forward_agent=False,
            connect_kwargs={
                "key_filename": str(key),
                "allow_agent": False,
                "look_for_keys": False,
                "banner_timeout": self.connect_timeout,
                "auth_timeout": self.connect_timeout,
            },
        )
        # Pin before the first connect: Fabric's constructor installed AutoAddPolicy.
        connection.client.load_host_keys(str(self.state_folder / KNOWN_HOSTS_FILE))
        connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return connection

    def open(self) -> HostConnections:
        for name in (KEY_FILE, KNOWN_HOSTS_FILE):
            if not (self.state_folder / name).is_file():
                raise GpufleetError(f"{self.state_folder / name} is missing: re-run gpufleet up / inventory")
        connections = {host.name: self._connection(host) for host in self.hosts}

        def connect(name: str) -> str | None:
            try:
                connections[name].open()
            except Exception as error:  # every failure is reported per host, below
                return describe_connect_error(error)
            return None

        failures = {
            name: problem for name, problem in self._parallel(connect, list(connections)).items() if problem
        }
        if failures:
            for connection in connections.values():
                connection.close()
            lines = "; ".join(
                f"{name} ({self.inventory.host(name).ssh_address}:{self.inventory.host(name).ssh_port}): {why}"
                for name, why in sorted(failures.items())
            )
            raise GpufleetError(
                f"cannot reach {len(failures)} of {len(self.hosts)} hosts, so nothing was started on any "
                f"host: {lines}"
            )
        self._connections = connections
        return self

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
        return [host.name for host in self.hosts]

    def connection(self, name: str) -> Connection:
        return self._connections[name]

    def sftp(self, name: str) -> paramiko.SFTPClient:
        try:
            sftp: paramiko.SFTPClient = self._connections[name].sftp()
        except _LOST_ERRORS as error:
            raise connection_lost(name, error) from error
        return sftp

    def run(self, name: str, command: str, timeout: float | None = None) -> CommandResult:
        """Run a shell command on one host; never raises for a non-zero exit."""
        try:
            result = self._connections[name].run(
                command, hide=True, warn=True, in_stream=False, timeout=timeout
            )
        except CommandTimedOut as error:
            return CommandResult(name, 124, error.result.stdout, f"timed out after {timeout} s")
        except _LOST_ERRORS as error:
            raise connection_lost(name, error) from error
        return CommandResult(name, int(result.exited), str(result.stdout), str(result.stderr))

    def run_all(self, commands: dict[str, str], timeout: float | None = None) -> dict[str, CommandResult]:
        """One command per host (host name -> command), all hosts at once."""
        return self._parallel(lambda name: self.run(name, commands[name], timeout), list(commands))

    def each(self, work: Callable[[str], T], names: list[str] | None = None) -> dict[str, T]:
        """``work(host name)`` on every (or the named) host in parallel; results by host."""
        return self._parallel(work, names if names is not None else self.names)

    @staticmethod
    def _parallel(work: Callable[[str], T], names: list[str]) -> dict[str, T]:
        if not names:
            return {}
        with ThreadPoolExecutor(max_workers=min(32, len(names))) as pool:
            return dict(zip(names, pool.map(work, names), strict=True))


@contextmanager
def connect(
    inventory: Inventory, state_folder: Path, timeout: float = DEFAULT_CONNECT_TIMEOUT_S
) -> Iterator[HostConnections]:
    with HostConnections(inventory, state_folder, timeout) as hosts:
        yield hosts
