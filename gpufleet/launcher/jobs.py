"""Start, follow, stop and list runs on a connected cluster.

The job runs detached on every host (the agent's supervisor, its own session);
the controller only starts it, then watches the hosts' state files and logs over
the open connections. Gang semantics: the first host that fails stops the run
everywhere (the supervisors also watch each other through a shared run folder,
so this holds when no controller is watching).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gpufleet.derive.torchrun import RunSettings, nproc_for, run_tag, torchrun_command
from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory
from gpufleet.launcher.connections import CONNECTION_ERRORS, HostConnections, connection_lost
from gpufleet.launcher.remote import agent_command, shell_command
from gpufleet.launcher.runs import (
    HOME_RUNS_ROOT,
    RECORD_FILE,
    RUNS_FOLDER,
    RunLocation,
    RunRecord,
    check_run_name,
    code_archive,
    first_failed,
    new_run_id,
    run_location,
    spec_hash,
    summarize_states,
)
from gpufleet.spec.models import ClusterSpec

POLL_S = 0.25
STATUS_EVERY_POLLS = 16  # every ~4 s: how often to ask whether a silent supervisor is still alive
STOP_GRACE_S = 8
DEFAULT_MAX_SECONDS = 7 * 24 * 3600
TAIL_LINES = 20

Writer = Callable[[str], None]


@dataclass
class Cluster:
    """A spec, its inventory, and open connections to every host."""

    spec: ClusterSpec
    inventory: Inventory
    hosts: HostConnections
    location: RunLocation = field(init=False)

    def __post_init__(self) -> None:
        self.location = run_location(self.spec)
        spec_hosts = [host.name for host in self.spec.hosts]
        if sorted(spec_hosts) != sorted(self.inventory_names()):
            raise GpufleetError(
                f"the spec's hosts ({', '.join(spec_hosts)}) differ from the inventory's "
                f"({', '.join(self.inventory_names())}): re-run gpufleet up / gpufleet inventory"
            )

    def inventory_names(self) -> list[str]:
        return [host.name for host in self.inventory.hosts]

    @property
    def names(self) -> list[str]:
        return [host.name for host in self.spec.hosts]

    def python(self, name: str) -> str:
        return self.inventory.host(name).python

    def agent(self, name: str, *args: str, timeout: float | None = 60) -> dict[str, object]:
        result = self.hosts.run(name, agent_command(self.python(name), *args), timeout=timeout)
        try:
            data = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
        except ValueError:
            data = None
        if not result.ok or not isinstance(data, dict):
            raise GpufleetError(
                f"{name}: the launcher's helper failed: {(result.stderr or result.stdout).strip()}"
            )
        if "error" in data:
            raise GpufleetError(f"{name}: {data['error']}")
        return data

    def run_roots(self) -> dict[str, str]:
        """The runs root per host; a home-folder root resolved to an absolute path."""
        if self.location.shared:
            return {name: self.location.root for name in self.names}

        def home(name: str) -> str:
            return str(PurePosixPath(self.hosts.sftp(name).normalize(".")) / RUNS_FOLDER)

        return self.hosts.each(home, self.names)

    def record_hosts(self) -> list[str]:
        """Where run.json lives: host 0 only on a shared folder, else every host."""
        return self.names[:1] if self.location.shared else self.names


# -- starting -------------------------------------------------------------------------------


def start_run(
    cluster: Cluster,
    script: Path,
    args: list[str],
    workdir: Path | None = None,
    name: str | None = None,
    nproc_per_node: int | None = None,
    max_seconds: int = DEFAULT_MAX_SECONDS,
) -> RunRecord:
    """Sync the code, write the run record, start torchrun detached on every host."""
    script = script.resolve()
    if not script.is_file():
        raise GpufleetError(f"{script}: no such script on this machine")
    folder = (workdir or script.parent).resolve()
    if not script.is_relative_to(folder):
        raise GpufleetError(f"{script} is not inside --workdir {folder}")
    try:
        run_id = check_run_name(name) if name else new_run_id(script.name)
        archive = code_archive(folder)
    except ValueError as error:
        raise GpufleetError(str(error)) from None
    roots = cluster.run_roots()
    run_dirs = {host: str(PurePosixPath(root) / run_id) for host, root in roots.items()}
    spec = cluster.spec
    commands = {
        host.name: torchrun_command(
            spec,
            host,
            RunSettings(
                run_id=run_id,
                script=str(PurePosixPath(*script.relative_to(folder).parts)),
                script_args=tuple(args),
                run_dir=run_dirs[host.name],
                nproc_per_node=nproc_per_node,
            ),
            python=cluster.python(host.name),
            nccl=cluster.inventory.nccl_env.get(host.name),
        )
        for host in spec.hosts
    }
    record = RunRecord(
        run=run_id,
        cluster=spec.name,
        spec_hash=spec_hash(spec),
        image_digest=cluster.inventory.image_digest or spec.image.digest,
        script=str(script.relative_to(folder)),
        args=list(args),
        workdir=str(folder),
        command={name: list(command.argv) for name, command in commands.items()},
        hosts=cluster.names,
        nnodes=len(spec.hosts),
        nproc_per_node={host.name: nproc_for(spec, host, nproc_per_node) for host in spec.hosts},
        run_dir=run_dirs,
        shared=cluster.location.shared,
        started=time.time(),
    )

    def prepare(name: str) -> None:
        run_dir = run_dirs[name]
        sftp = cluster.hosts.sftp(name)
        try:
            sftp.stat(f"{run_dir}/{RECORD_FILE}")
        except OSError:
            pass
        else:
            raise GpufleetError(f"{name}: run {run_id!r} already exists in {run_dir}; pick another --name")
        made = cluster.hosts.run(name, shell_command(["mkdir", "-p", f"{run_dir}/code", f"{run_dir}/hosts"]))
        if not made.ok:
            raise GpufleetError(f"{name}: cannot create {run_dir}: {made.stderr.strip()}")
        with sftp.open(f"{run_dir}/code.tar", "wb") as handle:
            handle.write(archive)
        cluster.agent(name, "unpack", run_dir)
        write_record(cluster, record, [name])

    _raise_first(cluster.hosts.each(_capture(prepare), cluster.record_hosts()))

    def launch(name: str) -> None:
        command = commands[name]
        argv = ["env", *(f"{key}={value}" for key, value in command.env.items()), *command.argv]
        tag = run_tag(spec.name, run_id, spec.host(name))
        cluster.agent(name, "start", run_dirs[name], name, tag, str(max_seconds), "--", *argv)

    try:
        results = cluster.hosts.each(_capture(launch))
    except BaseException:
        # Ctrl-C / SIGTERM (or a dropped connection) mid-launch: some hosts may have started.
        stop_run(cluster, record)
        raise
    failures = {host: error for host, error in results.items() if error}
    if failures:
        stop_run(cluster, record)
        raise GpufleetError(
            "could not start on every host, so the run was stopped everywhere: "
            + "; ".join(str(error) for error in failures.values())
        )
    return record


def _capture(work: Callable[[str], None]) -> Callable[[str], Exception | None]:
    def wrapped(name: str) -> Exception | None:
        try:
            work(name)
        except Exception as error:  # reported per host by the caller
            return error
        return None

    return wrapped


def _raise_first(errors: dict[str, Exception | None]) -> None:
    for error in errors.values():
        if isinstance(error, GpufleetError):
            raise error
        if error is not None:
            raise GpufleetError(f"{type(error).__name__}: {error}")


def write_record(cluster: Cluster, record: RunRecord, names: list[str] | None = None) -> None:
    data = (record.model_dump_json(indent=2) + "\n").encode()

    def put(name: str) -> None:
        run_dir = record.run_dir[name]
        sftp = cluster.hosts.sftp(name)
        # A name of its own per write: finish_record and refresh_run may write at once.
        tmp = f"{run_dir}/.{RECORD_FILE}.tmp-{uuid.uuid4().hex[:12]}"
        with sftp.open(tmp, "wb") as handle:
            handle.write(data)
        sftp.posix_rename(tmp, f"{run_dir}/{RECORD_FILE}")

    _raise_first(cluster.hosts.each(_capture(put), names or cluster.record_hosts()))


# -- watching -------------------------------------------------------------------------------


def _read_json(cluster: Cluster, name: str, path: str) -> dict[str, object]:
    try:
        with cluster.hosts.sftp(name).open(path, "rb") as handle:
            data = json.loads(handle.read())
    except CONNECTION_ERRORS as error:
        raise connection_lost(name, error) from error
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def host_state_file(record: RunRecord, name: str) -> str:
    return f"{record.run_dir[name]}/hosts/{name}.json"


def host_log_file(record: RunRecord, name: str) -> str:
    return f"{record.run_dir[name]}/logs/{name}.log"


def host_states(cluster: Cluster, record: RunRecord) -> dict[str, dict[str, object]]:
    """Each host's state as the agent sees it (checks that running supervisors are alive)."""
    return cluster.hosts.each(lambda name: cluster.agent(name, "status", record.run_dir[name], name))


@dataclass
class LogFollower:
    """Reads new bytes of each host's log and writes whole lines with a host prefix."""

    cluster: Cluster
    record: RunRecord
    write: Writer
    offsets: dict[str, int] = field(default_factory=dict)
    partial: dict[str, bytes] = field(default_factory=dict)

    def _read_new(self, name: str) -> bytes:
        offset = self.offsets.get(name, 0)
        try:
            with self.cluster.hosts.sftp(name).open(host_log_file(self.record, name), "rb") as handle:
                handle.seek(offset)
                data: bytes = handle.read()
        except CONNECTION_ERRORS as error:
            raise connection_lost(name, error) from error
        except OSError:
            return b""
        self.offsets[name] = offset + len(data)
        return data

    def poll(self, final: bool = False) -> None:
        chunks = self.cluster.hosts.each(self._read_new)
        width = max(len(name) for name in self.cluster.names)
        for name in self.cluster.names:
            data = self.partial.pop(name, b"") + chunks.get(name, b"")
            lines = data.split(b"\n")
            rest = lines.pop()
            if rest and final:
                lines.append(rest)
            elif rest:
                self.partial[name] = rest
            for line in lines:
                self.write(f"{name:<{width}} | {line.decode('utf-8', 'replace')}")


def log_tail(cluster: Cluster, record: RunRecord, name: str, lines: int = TAIL_LINES) -> str:
    try:
        sftp = cluster.hosts.sftp(name)
        path = host_log_file(record, name)
        size = sftp.stat(path).st_size or 0
        with sftp.open(path, "rb") as handle:
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except CONNECTION_ERRORS as error:
        raise connection_lost(name, error) from error
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def follow_run(
    cluster: Cluster,
    record: RunRecord,
    write: Writer | None = None,
    poll_s: float = POLL_S,
) -> RunRecord:
    """Wait for the run to end on every host (streaming logs when ``write``), enforcing gang stop."""
    follower = LogFollower(cluster, record, write) if write else None
    states: dict[str, dict[str, object]] = {}
    stopping = False
    polls = 0
    while True:
        if follower:
            follower.poll()
        pending = [name for name in cluster.names if name not in states]
        files = cluster.hosts.each(
            lambda name: _read_json(cluster, name, host_state_file(record, name)), pending
        )
        for name, data in files.items():
            if data.get("exit_code") is not None:
                states[name] = _with_state(data)
        polls += 1
        pending = [name for name in cluster.names if name not in states]
        if pending and polls % STATUS_EVERY_POLLS == 0:
            for name, data in host_states(cluster, record).items():
                if data.get("state") in ("lost", "missing") and name in pending:
                    states[name] = data
            pending = [name for name in cluster.names if name not in states]
        trigger = _gang_stop_trigger(states)
        if trigger and not stopping and pending:
            stopping = True
            if write:
                write(f"gpufleet: host {trigger} {states[trigger]['state']}; stopping the run on every host")
            # Every host, not only the pending ones: a lost host's supervisor died but its
            # torchrun may live on (stop is harmless where the run already ended).
            _stop_hosts(cluster, record, cluster.names)
            continue
        if not pending:
            break
        time.sleep(poll_s)
    if follower:
        follower.poll(final=True)
    return finish_record(cluster, record, states)


def _gang_stop_trigger(states: dict[str, dict[str, object]]) -> str | None:
    """The host whose end stops the run everywhere: the first failed or lost one, else a stopped one."""
    failed = first_failed(states)
    if failed:
        return failed
    stopped = sorted(name for name, state in states.items() if state.get("state") in ("stopped", "missing"))
    return stopped[0] if stopped else None


def _with_state(data: dict[str, object]) -> dict[str, object]:
    code = data.get("exit_code")
    reason = str(data.get("reason", ""))
    state = "succeeded" if code == 0 else ("stopped" if reason.startswith("stopped") else "failed")
    return {**data, "state": state}


def finish_record(cluster: Cluster, record: RunRecord, states: dict[str, dict[str, object]]) -> RunRecord:
    """Fill end time, exit codes, state and the first failed host into run.json."""
    names = {name: str(states.get(name, {}).get("state", "missing")) for name in cluster.names}
    codes: dict[str, int | None] = {}
    for name in cluster.names:
        code = states.get(name, {}).get("exit_code")
        codes[name] = int(str(code)) if code is not None else None
    ended = [float(str(s["ended"])) for s in states.values() if s.get("ended") is not None]
    updated = record.model_copy(
        update={
            "state": summarize_states(names),
            "exit_codes": codes,
            "host_states": names,
            "first_failed": first_failed(states),
            "ended": max(ended) if ended else time.time(),
        }
    )
    write_record(cluster, updated)
    return updated


# -- stopping and listing -------------------------------------------------------------------


def _stop_hosts(cluster: Cluster, record: RunRecord, names: list[str]) -> None:
    def stop(name: str) -> None:
        tag = run_tag(cluster.spec.name, record.run, cluster.spec.host(name))
        cluster.agent(
            name, "stop", record.run_dir[name], name, tag, str(STOP_GRACE_S), timeout=STOP_GRACE_S + 30
        )

    _raise_first(cluster.hosts.each(_capture(stop), names))


def stop_run(cluster: Cluster, record: RunRecord) -> RunRecord:
    """Stop the run's process groups on every host; nothing of it stays running."""
    _stop_hosts(cluster, record, cluster.names)
    states = host_states(cluster, record)
    return finish_record(cluster, record, states)


def list_runs(cluster: Cluster) -> list[RunRecord]:
    """Run records on host 0, newest first."""
    first = cluster.names[0]
    root = cluster.location.root if cluster.location.shared else HOME_RUNS_ROOT
    data = cluster.agent(first, "runs", root)
    records = []
    for raw in data.get("runs", []) or []:  # type: ignore[attr-defined]
        try:
            records.append(RunRecord.model_validate(raw))
        except ValueError:
            continue
    return records


def find_run(cluster: Cluster, name: str | None) -> RunRecord:
    records = list_runs(cluster)
    if not records:
        raise GpufleetError(f"no runs on cluster {cluster.spec.name!r} yet (start one with gpufleet train)")
    if name is None:
        return records[0]
    for record in records:
        if record.run == name:
            return record
    known = ", ".join(r.run for r in records[:5])
    raise GpufleetError(f"no run {name!r} on cluster {cluster.spec.name!r} (latest: {known})")


def refresh_run(cluster: Cluster, record: RunRecord) -> tuple[RunRecord, dict[str, dict[str, object]]]:
    """Live per-host states; a run found finished gets its record completed."""
    states = host_states(cluster, record)
    if record.ended is None and all(s.get("state") not in ("running",) for s in states.values()):
        record = finish_record(cluster, record, states)
    return record, states
