"""preflight, train, logs, status, stop: use a cluster that is up (its inventory) over SSH."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from gpufleet.cli.common import FileOption, StackOption, console, err_console, load_cli_spec
from gpufleet.errors import EXIT_FAILED, GpufleetError
from gpufleet.inventory import load_inventory, state_dir
from gpufleet.launcher.cluster import Cluster
from gpufleet.launcher.connections import HostConnections
from gpufleet.launcher.jobs import (
    LogFollower,
    find_run,
    follow_run,
    list_runs,
    log_tail,
    refresh_run,
    start_run,
    stop_run,
)
from gpufleet.launcher.preflight import run_preflight
from gpufleet.launcher.runs import RunRecord
from gpufleet.spec.loader import find_project_root

# Everything after SCRIPT belongs to the script (its own --flags included).
TRAIN_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}

RunArgument = Annotated[str | None, typer.Argument(help="Run name (default: the latest run).")]


@contextmanager
def open_cluster(stack: str | None, file: Path | None, require_all: bool = True) -> Iterator[Cluster]:
    """Spec + inventory + one SSH connection per host, reused by every step of the command.

    ``require_all``: commands that start something need every host; the others
    (status, logs, stop) act on the hosts they reach and name the rest.
    """
    _, spec = load_cli_spec(stack, file, quiet=True)
    folder = state_dir(find_project_root(), spec.name)
    inventory = load_inventory(folder)
    with HostConnections(inventory, folder, require_all=require_all) as hosts:
        cluster = Cluster(spec, inventory, hosts)
        for name, why in cluster.unreachable.items():
            host = inventory.host(name)
            err_console.print(
                f"cannot reach {name} ({host.ssh_address}:{host.ssh_port}): {why}; "
                "acting on the other hosts, showing it as unreachable",
                style="yellow",
                highlight=False,
                soft_wrap=True,
            )
        yield cluster


def _unreachable_exit(cluster: Cluster) -> None:
    """Exit 1 when a host could not be reached (the command did what it could on the others)."""
    if cluster.unreachable:
        raise typer.Exit(1)


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def preflight(stack: StackOption = None, file: FileOption = None) -> None:
    """Check every host before training (versions, CUDA, NAS mounts, rendezvous port, clock,
    memlock, /dev/shm, RDMA) and print one table; exit 1 if a hard check fails."""
    with open_cluster(stack, file) as cluster:
        report = run_preflight(cluster)
    console.print(report.table())
    for line in report.details():
        console.print(line, highlight=False, markup=False)  # wrapped between words
    if report.failed:
        raise GpufleetError(
            f"preflight failed on {', '.join(report.failed_hosts())}: fix the checks marked FAIL"
        )
    console.print("preflight passed", style="green")


def _summary(record: RunRecord, cluster: Cluster) -> int:
    where = record.run_dir[cluster.names[0]]
    took = f"{(record.ended or time.time()) - record.started:.1f} s"
    if record.state == "succeeded":
        finished = record.finished_hosts or record.hosts
        console.print(
            f"run {record.run} succeeded on {len(finished)} of {len(record.hosts)} hosts in {took}"
            + (f" ({', '.join(finished)})" if len(finished) < len(record.hosts) else ""),
            style="green",
            highlight=False,
        )
        if record.why:
            console.print(record.why, highlight=False, soft_wrap=True)
        code = 0
    else:
        failed = record.first_failed
        code = EXIT_FAILED  # the script's own exit code is printed, not passed on (2 means bad input)
        if failed:
            exit_code = record.exit_codes.get(failed)
            how = (
                f"host {failed} was lost ({record.why})"
                if failed in record.lost_hosts
                else f"host {failed} failed first (exit {exit_code})"
            )
            err_console.print(
                f"run {record.run} {record.state}: {how}; the run was stopped on every reachable "
                f"host. Last lines of {failed}'s log:",
                style="red",
                highlight=False,
                soft_wrap=True,
            )
            err_console.print(log_tail(cluster, record, failed), highlight=False, markup=False)
        else:
            err_console.print(f"run {record.run} {record.state} after {took}", style="red", highlight=False)
    console.print(f"logs: {where}/logs/  record: {where}/run.json", highlight=False, soft_wrap=True)
    return code


def train(
    script: Annotated[
        Path,
        typer.Argument(
            help="Training script on this machine (its folder is synced).", exists=True, dir_okay=False
        ),
    ],
    args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script.")] = None,
    stack: StackOption = None,
    file: FileOption = None,
    nproc_per_node: Annotated[
        int | None, typer.Option(min=1, help="Workers per host (default: from the spec).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: <script>-<time>-<id>).")] = None,
    detach: Annotated[bool, typer.Option(help="Start the run and return; it keeps running.")] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Folder to sync to the hosts (default: the script's folder).", exists=True, file_okay=False
        ),
    ] = None,
) -> None:
    """Run SCRIPT with torchrun on every host: detached on the hosts, logs streamed here.
    Ctrl-C stops the run everywhere; so does the first host that fails."""
    with open_cluster(stack, file) as cluster:
        # Before start_run: a SIGTERM while starting stops the run like one while following.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            code = _train(cluster, script, list(args or []), workdir, name, nproc_per_node, detach)
        finally:
            signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code)


def _train(
    cluster: Cluster,
    script: Path,
    args: list[str],
    workdir: Path | None,
    name: str | None,
    nproc_per_node: int | None,
    detach: bool,
) -> int:
    try:
        record = start_run(cluster, script, args, workdir, name, nproc_per_node)
    except KeyboardInterrupt:
        # start_run stopped whatever it had started.
        err_console.print("interrupted while starting: nothing of the run is left running")
        return 130
    where = record.run_dir[cluster.names[0]]
    console.print(
        f"run {record.run}: {record.nnodes} hosts x {max(record.nproc_per_node.values())} workers, "
        f"folder {where}{'' if record.shared else ' on each host'}",
        highlight=False,
        soft_wrap=True,
    )
    if detach:
        console.print(f"detached; follow with: gpufleet logs --follow {record.run}", highlight=False)
        return 0
    try:
        record = follow_run(cluster, record, write=_print_line)
    except KeyboardInterrupt:
        err_console.print(f"interrupted: stopping run {record.run} on every host")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_run(cluster, record)
        err_console.print(f"run {record.run} stopped")
        return 130
    return _summary(record, cluster)


def logs(
    run: RunArgument = None,
    stack: StackOption = None,
    file: FileOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep streaming until the run ends.")
    ] = False,
) -> None:
    """Print a run's logs from every host, prefixed with the host name (and rank)."""
    with open_cluster(stack, file, require_all=False) as cluster:
        record = find_run(cluster, run)
        if follow and record.ended is None:
            try:
                record = follow_run(cluster, record, write=_print_line)
            except KeyboardInterrupt:
                return  # the run goes on; only watching stops
            raise typer.Exit(_summary(record, cluster))
        for name, error in LogFollower(cluster, record, _print_line).poll(final=True).items():
            err_console.print(f"{name}: log not read: {error}", style="yellow", highlight=False)
        _unreachable_exit(cluster)


def status(
    run: RunArgument = None,
    stack: StackOption = None,
    file: FileOption = None,
    limit: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
) -> None:
    """Recent runs with their state on every host."""
    with open_cluster(stack, file, require_all=False) as cluster:
        records = [find_run(cluster, run)] if run else list_runs(cluster)[:limit]
        if not records:
            console.print(f"no runs on cluster {cluster.spec.name} yet")
            return
        table = Table(title=f"runs on cluster {cluster.spec.name}", title_justify="left")
        for column in ("run", "started", "ended", "state", *cluster.names):
            table.add_column(column)
        for record in records:
            if record.ended is None:
                record, states = refresh_run(cluster, record)
                per_host = [states[name].state if name in states else "?" for name in cluster.names]
            else:
                per_host = [_host_cell(record, name) for name in cluster.names]
            table.add_row(record.run, record.started_text(), record.ended_text(), record.state, *per_host)
        console.print(table)
        _unreachable_exit(cluster)


def _host_cell(record: RunRecord, name: str) -> str:
    code = record.exit_codes.get(name)
    state = record.host_states.get(name, "-")
    return state if code in (None, 0) else f"{state} (exit {code})"


def stop(run: RunArgument = None, stack: StackOption = None, file: FileOption = None) -> None:
    """Stop a run (default: the latest) on every host: its process groups and every worker."""
    with open_cluster(stack, file, require_all=False) as cluster:
        record = find_run(cluster, run)
        record = stop_run(cluster, record)
        missed = [
            name
            for name in cluster.names
            if name in cluster.unreachable or record.host_states.get(name) == "unreachable"
        ]
        if not missed:
            console.print(f"run {record.run}: {record.state} on every host", highlight=False)
            return
        done = [name for name in cluster.names if name not in missed]
        err_console.print(
            f"run {record.run}: stopped on {', '.join(done)}; not on {', '.join(missed)} (unreachable: "
            "its processes could not be stopped from here; a host cut off from the others stops its "
            "own workers after training.host_timeout_s)",
            style="yellow",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
