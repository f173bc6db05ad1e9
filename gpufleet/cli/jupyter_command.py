"""gpufleet jupyter HOST: the one way to JupyterLab, through an SSH tunnel with pinned keys.

JupyterLab listens on 127.0.0.1 inside the host's container and is never
opened in the firewall. This command forwards a local port to it over the
container's sshd (the cluster's key, the pinned host key), asks the server
for its token over the same login, and prints a URL that works.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.cluster_commands import HostArgument, ssh_argv
from gpufleet.cli.common import FileOption, StackOption, console, load_cli_spec
from gpufleet.derive.container import IMAGE_PYTHON
from gpufleet.errors import GpufleetError
from gpufleet.inventory import InventoryHost, load_inventory, state_dir
from gpufleet.spec.loader import find_project_root

TOKEN_WAIT_S = 60.0
LIST_COMMAND = [IMAGE_PYTHON, "-m", "jupyter_server", "list", "--json"]

PortOption = Annotated[
    int, typer.Option("--port", "-p", min=1, max=65535, help="Local port of the tunnel (on 127.0.0.1).")
]


def server_url(list_output: str, remote_port: int, local_port: int) -> str | None:
    """The URL, through the tunnel, of the server ``jupyter server list --json`` names on ``remote_port``."""
    for line in list_output.splitlines():
        try:
            server = json.loads(line)
        except ValueError:
            continue
        if isinstance(server, dict) and server.get("port") == remote_port:
            base = str(server.get("base_url") or "/")
            token = str(server.get("token") or "")
            return f"http://127.0.0.1:{local_port}{base}lab" + (f"?token={token}" if token else "")
    return None


def tunnel_argv(host: InventoryHost, folder: Path, local_port: int, remote_port: int) -> list[str]:
    """ssh -N -L, on 127.0.0.1 only at both ends; fails at once if the local port is taken."""
    argv = ssh_argv(host, folder, [])
    forward = [
        "-N",
        "-o", "ExitOnForwardFailure=yes",
        "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
    ]  # fmt: skip
    split = argv.index("--")
    return argv[:split] + forward + argv[split:]


def _token_url(host: InventoryHost, folder: Path, remote_port: int, local_port: int) -> str:
    deadline = time.monotonic() + TOKEN_WAIT_S
    last = ""
    while True:
        result = subprocess.run(
            ssh_argv(host, folder, LIST_COMMAND), capture_output=True, text=True, check=False, timeout=60
        )
        last = (result.stdout + result.stderr).strip()
        url = server_url(result.stdout, remote_port, local_port)
        if url:
            return url
        if time.monotonic() > deadline:
            raise GpufleetError(
                f"host {host.name}: no JupyterLab answers on 127.0.0.1:{remote_port} in its container "
                f"after {TOKEN_WAIT_S:.0f} s (is jupyter.enabled true, and the container up?): "
                f"{last[-300:] or 'no output'}"
            )
        time.sleep(1.0)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None:
                raise GpufleetError(
                    f"the SSH tunnel exited (code {process.returncode}): is 127.0.0.1:{port} taken? "
                    "pick another with --port"
                ) from None
            if time.monotonic() > deadline:
                raise GpufleetError(f"the SSH tunnel did not open 127.0.0.1:{port}") from None
            time.sleep(0.1)


def jupyter(
    host: HostArgument,
    stack: StackOption = None,
    file: FileOption = None,
    port: PortOption = 8888,
) -> None:
    """Open an SSH tunnel to JupyterLab in HOST's container and print its URL (with the token).

    Runs until interrupted (Ctrl-C closes the tunnel). Jupyter is reachable no other way.
    """
    _, spec = load_cli_spec(stack, file, quiet=True)
    if not spec.jupyter.enabled:
        raise GpufleetError(
            f"cluster {spec.name!r} runs no JupyterLab: set jupyter.enabled: true in the stack file "
            "and stand the cluster up again"
        )
    folder = state_dir(find_project_root(), spec.name)
    target = load_inventory(folder).host(host)
    url = _token_url(target, folder, spec.jupyter.port, port)
    process = subprocess.Popen(tunnel_argv(target, folder, port, spec.jupyter.port), stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port, process)
        console.print(f"JupyterLab on {target.name}: {url}", highlight=False, soft_wrap=True)
        console.print("(the tunnel stays open until Ctrl-C)", highlight=False)
        console.file.flush()  # a caller reading our output through a pipe sees the URL now
        process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
