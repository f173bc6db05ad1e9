"""Deploy a host's rendered folder and run its compose file, over SSH, as production does.

The controller logs into the host's own sshd (``hosts[].docker_ssh``) with the
cluster's key and the host's pinned host key (paramiko RejectPolicy: nothing is
trusted on first use), copies ``hosts/<name>/`` into ``~/gpufleet/<cluster>/``
over SFTP with fixed modes, and runs ``docker-compose`` there: the daemon
resolves the compose file's bind mounts on the host, as on a real one.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

import paramiko

from gpufleet.errors import GpufleetError
from gpufleet.inventory import InventoryHost
from gpufleet.local.containers import DEPLOY_DIR
from gpufleet.local.logins import connect_pinned, pinned_client

COMPOSE = "docker-compose"
COMMAND_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DeployFile:
    text: str
    mode: int


@dataclass(frozen=True)
class CommandResult:
    status: int
    output: str

    def tail(self, lines: int = 12) -> str:
        return "\n    ".join(self.output.strip().splitlines()[-lines:]) or "(no output)"


def remote_folder(cluster: str) -> str:
    """Relative to the login's home (SFTP and ssh sessions both start there)."""
    return posixpath.join(DEPLOY_DIR, cluster)


def _connect(login: InventoryHost, private_key: str, timeout: float = 10.0) -> paramiko.SSHClient:
    client = pinned_client(login)
    try:
        connect_pinned(client, login, private_key, timeout)
    except (paramiko.SSHException, OSError) as error:
        client.close()
        raise GpufleetError(
            f"host {login.name}: login {login.user}@{login.ssh_address}:{login.ssh_port} (docker_ssh) "
            f"failed: {error}"
        ) from None
    return client


def _run(client: paramiko.SSHClient, command: str, timeout: float) -> CommandResult:
    _, stdout, _ = client.exec_command(command, timeout=timeout, get_pty=False)
    output = stdout.read().decode(errors="replace")
    return CommandResult(stdout.channel.recv_exit_status(), output)


def deploy_and_compose_up(
    login: InventoryHost,
    private_key: str,
    cluster: str,
    files: Mapping[str, DeployFile],
    timeout: float = COMMAND_TIMEOUT_S,
) -> CommandResult:
    """Copy ``files`` (name -> content, mode) into the host's deploy folder, then compose up."""
    client = _connect(login, private_key)
    folder = remote_folder(cluster)
    try:
        sftp = client.open_sftp()
        try:
            _makedirs(sftp, folder)
            for name, file in sorted(files.items()):  # a name may have a folder: peers/hosts
                path = posixpath.join(folder, name)
                _makedirs(sftp, posixpath.dirname(path))
                temporary = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(name)}.tmp")
                with sftp.open(temporary, "w") as handle:
                    handle.chmod(0o600)  # before any byte is written: the key never sits readable
                    handle.write(file.text.encode())
                sftp.chmod(temporary, file.mode)
                sftp.posix_rename(temporary, path)
        finally:
            sftp.close()
        return _run(client, f"cd {shlex.quote(folder)} && {COMPOSE} up -d --no-build 2>&1", timeout)
    except (paramiko.SSHException, OSError) as error:
        raise GpufleetError(f"host {login.name}: deploying the compose folder failed: {error}") from None
    finally:
        client.close()


def compose(
    login: InventoryHost, private_key: str, cluster: str, *args: str, timeout: float = COMMAND_TIMEOUT_S
) -> CommandResult:
    """``docker-compose ARGS`` in the host's deploy folder (logs, ps, down)."""
    client = _connect(login, private_key)
    try:
        command = f"cd {shlex.quote(remote_folder(cluster))} && {COMPOSE} {shlex.join(args)} 2>&1"
        return _run(client, command, timeout)
    except (paramiko.SSHException, OSError) as error:
        raise GpufleetError(f"host {login.name}: docker-compose {' '.join(args)} failed: {error}") from None
    finally:
        client.close()


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    path = ""
    for part in folder.split("/"):
        path = posixpath.join(path, part) if path else part
        try:
            sftp.stat(path)
        except OSError:
            sftp.mkdir(path, mode=0o700)
