"""Wait until a real key login works on every host, in parallel.

paramiko (what Fabric uses) with the controller key, the pinned host key and
RejectPolicy: an unexpected host key fails the login, nothing is trusted on
first use. The login runs the host's Python, so an interpreter the login user
cannot execute is caught here too.
"""

from __future__ import annotations

import base64
import io
import shlex
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import paramiko

from gpufleet.errors import GpufleetError
from gpufleet.inventory import InventoryHost

CHECK_COMMAND = "import sys; print(sys.version_info[0])"


def wait_for_port(address: str, port: int, deadline: float, alive: Callable[[], bool]) -> None:
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError as error:
            if not alive():
                raise GpufleetError(f"sshd on {address}:{port} exited before accepting connections") from None
            if time.monotonic() > deadline:
                raise GpufleetError(f"sshd on {address}:{port} is not reachable: {error}") from None
            time.sleep(0.01)


def pinned_client(host: InventoryHost) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    key_type, key_data = host.host_key.split()[:2]
    client.get_host_keys().add(
        host.known_hosts_line().split()[0],
        key_type,
        paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data)),
    )
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect_pinned(client: paramiko.SSHClient, host: InventoryHost, private_key: str, timeout: float) -> None:
    """A key-only login (no agent, no key files) with the cluster's ed25519 key."""
    client.connect(
        host.ssh_address,
        port=host.ssh_port,
        username=host.user,
        pkey=paramiko.Ed25519Key.from_private_key(io.StringIO(private_key)),
        look_for_keys=False,
        allow_agent=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )


def verify_login(host: InventoryHost, private_key: str, timeout: float = 5.0) -> None:
    client = pinned_client(host)
    try:
        connect_pinned(client, host, private_key, timeout)
        _, stdout, stderr = client.exec_command(f"{shlex.quote(host.python)} -c {shlex.quote(CHECK_COMMAND)}")
        status = stdout.channel.recv_exit_status()
        if status != 0:
            raise GpufleetError(
                f"host {host.name}: logged in as {host.user}, but {host.python} does not run for that "
                f"user (exit {status}: {stderr.read().decode(errors='replace').strip()}); keep the "
                "venv on a path every user can read (make setup builds it on /usr/bin/python3.11)"
            )
    except (paramiko.SSHException, OSError) as error:
        raise GpufleetError(f"host {host.name}: key login as {host.user} failed: {error}") from None
    finally:
        client.close()


def verify_all(
    hosts: list[InventoryHost], private_key: str, alive: Callable[[str], bool], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout

    def one(host: InventoryHost) -> None:
        wait_for_port(host.ssh_address, host.ssh_port, deadline, lambda: alive(host.name))
        verify_login(host, private_key)

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for future in [pool.submit(one, h) for h in hosts]:
            future.result()
