"""up, down and ssh: stand a local cluster up, take it down, log in to a host."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.cli.common import FileOption, StackOption, console, load_cli_spec
from gpufleet.cli.image_commands import ensure_stack_lock
from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, InventoryHost, load_inventory, state_dir
from gpufleet.spec.loader import find_project_root

HostArgument = Annotated[str, typer.Argument(help="Host name, as in the spec's hosts list.")]
CommandArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Command to run on the host (after --); a login shell without one."),
]


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def up(stack: StackOption = None, file: FileOption = None) -> None:
    """Build a 'provisioner: local' cluster on this machine (network namespaces, real sshd and
    nftables) and wait until a key login works on every host. Needs root."""
    from gpufleet.local import cluster_is_up, cluster_up, preflight_tools  # only here: a fast CLI start

    path, spec = load_cli_spec(stack, file)
    preflight_tools.check_provisioner(spec)  # a Pulumi stack is refused before anything is locked
    lock = ensure_stack_lock(path, spec) if spec.runs_image else None
    root = find_project_root()
    already = cluster_is_up(spec, root)
    with console.status(f"cluster {spec.name}: starting") as status:
        inventory = cluster_up(
            spec, root, progress=lambda message: status.update(f"cluster {spec.name}: {message}"), lock=lock
        )
    state = "was already up; nothing changed" if already else "is up"
    table = Table(title=f"cluster {spec.name} {state}", title_justify="left")
    for column in ("host", "address", "ssh"):
        table.add_column(column)
    for host in inventory.hosts:
        table.add_row(host.name, host.address, f"{host.user}@{host.ssh_address}:{host.ssh_port}")
    console.print(table)
    where = state_dir(root, spec.name)
    selector = f"--stack {stack}" if stack else f"-f {file}"
    console.print(f"inventory: {_display(where / 'inventory.json')}", highlight=False, soft_wrap=True)
    console.print(
        f"log in: gpufleet ssh {selector} {inventory.hosts[0].name}", highlight=False, soft_wrap=True
    )
    console.print(f"remove: gpufleet down {selector}", highlight=False, soft_wrap=True)


PurgeOption = Annotated[
    bool,
    typer.Option(
        "--purge", help="Also delete the NAS stand-ins: every run's logs and checkpoints. Kept otherwise."
    ),
]


def down(stack: StackOption = None, file: FileOption = None, purge: PurgeOption = False) -> None:
    """Remove a local cluster: processes, daemons, namespaces, links, firewall tables, state. The NAS
    data (checkpoints, run logs) and the image cache stay, unless --purge. Exit 0 if not up."""
    from gpufleet.local import cluster_down

    _, spec = load_cli_spec(stack, file, quiet=True)
    messages: list[str] = []
    cluster_down(spec, find_project_root(), progress=messages.append, purge=purge)
    console.print(messages[-1] if messages and "not up" in messages[-1] else f"cluster {spec.name} is down")


def _config_path(path: Path) -> str:
    """A path as an ssh option value: quoted (spaces), with '%' escaped (ssh expands %-tokens)."""
    escaped = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def ssh_argv(host: InventoryHost, folder: Path, command: list[str]) -> list[str]:
    """The system ssh client with the cluster's key and pinned host keys: never trust on first use.

    ``-F /dev/null``: no ~/.ssh/config or /etc/ssh/ssh_config (an IdentityFile, ProxyCommand
    or forward there must not apply to the cluster's hosts). The key goes in as an option, not
    ``-i``, which checks the unexpanded path and so cannot carry an escaped '%'.
    """
    argv = [
        "ssh",
        "-F", "/dev/null",
        "-o", f"IdentityFile={_config_path(folder / KEY_FILE)}",
        "-o", f"UserKnownHostsFile={_config_path(folder / KNOWN_HOSTS_FILE)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ForwardAgent=no",
        "-p", str(host.ssh_port),
        "-l", host.user,
        "--",  # after this ssh parses no options: the command's own flags stay the command's
        host.ssh_address,
    ]  # fmt: skip
    return argv + command


def ssh(
    host: HostArgument,
    command: CommandArgument = None,
    stack: StackOption = None,
    file: FileOption = None,
) -> None:
    """Open a shell, or run a command, on a host of the cluster, with its key and pinned host key."""
    _, spec = load_cli_spec(stack, file, quiet=True)
    folder = state_dir(find_project_root(), spec.name)
    target = load_inventory(folder).host(host)
    argv = ssh_argv(target, folder, command or [])
    os.execvp(argv[0], argv)  # noqa: S606 - replaces this process: the exit code is the remote command's
