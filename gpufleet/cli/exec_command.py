"""exec: one command on every host at once, each line prefixed by its host, then who failed."""

from __future__ import annotations

import sys
import threading
from typing import Annotated

import typer

from gpufleet.cli.common import FileOption, StackOption, err_console, load_cli_spec
from gpufleet.cli.launch_commands import open_cluster
from gpufleet.errors import InputError
from gpufleet.launcher.connections import LineSink

EXEC_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}

HostsOption = Annotated[
    str | None, typer.Option("--hosts", help="Only these hosts, comma-separated (default: every host).")
]


def exec_(
    command: Annotated[list[str], typer.Argument(help="The command (after --), as `ssh HOST CMD` runs it.")],
    stack: StackOption = None,
    file: FileOption = None,
    hosts: HostsOption = None,
) -> None:
    """Run CMD on every host at once with the cluster's key and pinned host keys. Each output line is
    prefixed by its host; then the hosts where it failed, with their exit codes. Exit 0 when it
    succeeded everywhere, else 1."""
    _, spec = load_cli_spec(stack, file, quiet=True)
    chosen = _chosen(hosts, [host.name for host in spec.hosts])  # before connecting: a typo costs nothing
    with open_cluster(stack, file, require_all=False) as cluster:
        width = max(len(name) for name in chosen)
        lock = threading.Lock()
        text = " ".join(command)

        def one(name: str) -> int:
            prefix = f"{name.ljust(width)} | "
            out = LineSink(prefix, sys.stdout.write, lock)
            err = LineSink(prefix, sys.stderr.write, lock)
            return cluster.hosts.stream(name, text, out, err)

        reachable = [name for name in chosen if name in cluster.hosts.names]
        result = cluster.hosts.each(one, reachable)
        sys.stdout.flush()
        failed = {name: f"exit {code}" for name, code in result.results.items() if code != 0}
        failed |= {name: str(error) for name, error in result.errors.items()}
        failed |= {
            name: f"unreachable: {cluster.unreachable[name]}" for name in chosen if name not in reachable
        }
    if failed:
        listed = ", ".join(f"{name} ({failed[name]})" for name in chosen if name in failed)
        err_console.print(
            f"failed on {len(failed)} of {len(chosen)} hosts: {listed}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)


def _chosen(hosts: str | None, names: list[str]) -> list[str]:
    if hosts is None:
        return names
    wanted = [name.strip() for name in hosts.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in names]
    if unknown or not wanted:
        raise InputError(
            f"--hosts: {', '.join(unknown) or 'no host named'} not in the cluster (hosts: {', '.join(names)})"
        )
    return [name for name in names if name in wanted]
