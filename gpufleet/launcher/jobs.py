"""Start, follow, stop and list runs on a connected cluster.

The job runs detached on every host (the agent's supervisor, its own session);
the controller only starts it, then watches the hosts' state files and logs over
the open connections. Gang semantics: the first host that fails stops the run
everywhere (the supervisors also watch each other, through heartbeats and a
shared run folder, so this holds when no controller is watching).

A host whose SSH connection drops is retried every second: if it refuses (it
is up but its sshd is gone) it is lost at once; if it stays silent it is lost
after ``training.host_timeout_s``. A lost host stops the run on every
reachable host, unless ``training.min_hosts`` hosts remain (and the
rendezvous host is not the one lost): then the job re-forms on them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from gpufleet.derive.torchrun import RunSettings, min_hosts, nproc_for, run_tag, torchrun_command
from gpufleet.errors import GpufleetError
from gpufleet.launcher.cluster import Cluster
from gpufleet.launcher.connections import (
    CONNECTION_ERRORS,
    ConnectionLost,
    GroupResult,
    answered,
    connection_lost,
    describe_connect_error,
)
from gpufleet.launcher.environment import expected_manifest, parity_problems, read_environments
from gpufleet.launcher.remote import shell_command
from gpufleet.launcher.runs import (
    HOME_RUNS_ROOT,
    RECORD_FILE,
    HostState,
    RunRecord,
    check_run_name,
    code_archive,
    first_failed,
    new_run_id,
    spec_hash,
    summarize_states,
)

__all__ = ["Cluster", "follow_run", "start_run", "stop_run"]

POLL_S = 0.25
STATUS_EVERY_S = 4.0  # how often to ask whether a silent supervisor is still alive
STOP_GRACE_S = 8
RECONNECT_EVERY_S = 1.0
RECONNECT_TIMEOUT_S = 3.0
STATUS_TIMEOUT_S = 10.0
DEFAULT_MAX_SECONDS = 7 * 24 * 3600
TAIL_LINES = 20
BEAT_PORT_OFFSET = 1  # the supervisors' heartbeats: UDP on the rendezvous port + 1

Writer = Callable[[str], None]
# A read that raises one of these lost the host; any other OSError is a missing file.
READ_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)


# -- starting -------------------------------------------------------------------------------


def agent_config(cluster: Cluster, run_id: str, run_dir: str, name: str, max_seconds: int) -> str:
    """What the host's supervisor needs to know: where, who its peers are, when a peer is lost."""
    spec = cluster.spec
    return json.dumps(
        {
            "run_dir": run_dir,
            "host": name,
            "run": run_id,
            "tag": run_tag(spec.name, run_id, spec.host(name)),
            "max_s": max_seconds,
            "peers": {host.name: host.address for host in spec.hosts},
            "beat_port": spec.network.rdzv_port + BEAT_PORT_OFFSET,
            "host_timeout_s": spec.training.host_timeout_s,
            "min_hosts": min_hosts(spec),
            "rdzv_host": spec.hosts[0].name,
        }
    )


def check_environment_parity(cluster: Cluster) -> str | None:
    """Refuse to start unless every host runs the same, unchanged image; its manifest digest."""
    if not cluster.spec.runs_image:
        return None
    environments = read_environments(cluster, quick=True, names=cluster.names)
    problems = parity_problems(environments, cluster.inventory.manifest_digest)
    if problems:
        named = "; ".join(f"{host}: {problem}" for host, problem in problems.items())
        raise GpufleetError(
            f"the hosts do not all run the team's environment, so the run was not started: {named}. "
            "Recreate those hosts' containers from the image; gpufleet preflight lists every difference"
        )
    return expected_manifest(environments, cluster.inventory.manifest_digest)


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
    manifest = check_environment_parity(cluster)
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
        lock_digest=cluster.inventory.lock_digest,
        manifest_digest=manifest,
        image_ids={host.name: cluster.inventory.image_id for host in spec.hosts} if spec.runs_image else {},
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
        min_hosts=min_hosts(spec),
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

    cluster.hosts.each(prepare, cluster.record_hosts()).raise_first()

    def launch(name: str) -> None:
        command = commands[name]
        argv = ["env", *(f"{key}={value}" for key, value in command.env.items()), *command.argv]
        config = agent_config(cluster, run_id, run_dirs[name], name, max_seconds)
        cluster.agent(name, "start", config, "--", *argv)

    try:
        results = cluster.hosts.each(launch, cluster.names)
    except BaseException:
        # Ctrl-C / SIGTERM mid-launch: some hosts may have started.
        stop_run(cluster, record)
        raise
    if results.errors:
        stop_run(cluster, record)
        raise GpufleetError(
            "could not start on every host, so the run was stopped everywhere: "
            + "; ".join(str(error) for error in results.errors.values())
        )
    return record


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

    cluster.hosts.each(put, names or cluster.record_hosts()).raise_first()


# -- watching -------------------------------------------------------------------------------


def _read_json(cluster: Cluster, name: str, path: str) -> dict[str, object]:
    try:
        with cluster.hosts.sftp(name).open(path, "rb") as handle:
            data = json.loads(handle.read())
    except READ_ERRORS as error:
        raise connection_lost(name, error) from error
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def host_state_file(record: RunRecord, name: str) -> str:
    return f"{record.run_dir[name]}/hosts/{name}.json"


def host_log_file(record: RunRecord, name: str) -> str:
    return f"{record.run_dir[name]}/logs/{name}.log"


def parse_state(data: dict[str, object]) -> HostState | None:
    """A state file or agent answer as a HostState; None when it is not one (yet)."""
    try:
        return HostState.model_validate(data)
    except ValidationError:
        return None


def read_state(cluster: Cluster, record: RunRecord, name: str) -> HostState | None:
    """The host's state file, read over SFTP (no process started on the host)."""
    return parse_state(_read_json(cluster, name, host_state_file(record, name)))


def agent_state(cluster: Cluster, record: RunRecord, name: str) -> HostState:
    """The host's state as the agent sees it (it checks that a running supervisor is alive)."""
    data = cluster.agent(name, "status", record.run_dir[name], name, timeout=STATUS_TIMEOUT_S)
    state = parse_state(data)
    if state is None:
        raise GpufleetError(f"{name}: the launcher's helper answered no host state: {data}")
    return state


def host_states(cluster: Cluster, record: RunRecord) -> dict[str, HostState]:
    """Every host's state: the reachable ones as the agent sees them, the others ``unreachable``."""
    group = cluster.hosts.each(lambda name: agent_state(cluster, record, name), cluster.reachable)
    states = dict(group.results)
    for name, error in group.errors.items():
        states[name] = HostState(state="unreachable", reason=str(error))
    for name, why in cluster.unreachable.items():
        states.setdefault(name, HostState(state="unreachable", reason=why))
    return {name: states[name] for name in cluster.names if name in states}


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
        except READ_ERRORS as error:
            raise connection_lost(name, error) from error
        except OSError:
            return b""
        self.offsets[name] = offset + len(data)
        return data

    def poll(self, names: list[str] | None = None, final: bool = False) -> dict[str, Exception]:
        """Write what is new on ``names`` (default: every reachable host); the hosts that failed."""
        chunks = self.cluster.hosts.each(
            self._read_new, names if names is not None else self.cluster.reachable
        )
        width = max(len(name) for name in self.cluster.names)
        for name in self.cluster.names:
            data = self.partial.pop(name, b"") + chunks.results.get(name, b"")
            lines = data.split(b"\n")
            rest = lines.pop()
            if rest and final:
                lines.append(rest)
            elif rest:
                self.partial[name] = rest
            for line in lines:
                self.write(f"{name:<{width}} | {line.decode('utf-8', 'replace')}")
        return chunks.errors


def log_tail(cluster: Cluster, record: RunRecord, name: str, lines: int = TAIL_LINES) -> str:
    if name not in cluster.reachable:
        return f"(log not readable: {name} is unreachable)"
    try:
        sftp = cluster.hosts.sftp(name)
        path = host_log_file(record, name)
        size = sftp.stat(path).st_size or 0
        with sftp.open(path, "rb") as handle:
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except READ_ERRORS as error:
        raise connection_lost(name, error) from error
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class HostWatch:
    """Which hosts answer: a host that drops is retried; refusing or silent too long, it is lost."""

    def __init__(self, cluster: Cluster, timeout_s: float) -> None:
        self.cluster = cluster
        self.timeout_s = timeout_s
        now = time.monotonic()
        self.last_ok = dict.fromkeys(cluster.names, now)
        self.lost: dict[str, str] = {}
        self._attempts: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._outcome: dict[str, BaseException | None] = {}
        for name in cluster.unreachable:
            self.last_ok[name] = now

    def ok(self, name: str) -> None:
        self.last_ok[name] = time.monotonic()

    def failed(self, name: str, error: BaseException) -> None:
        """A call to ``name`` failed: drop its connection (it will be retried)."""
        detail = error.detail if isinstance(error, ConnectionLost) else str(error)
        self.cluster.hosts.drop(name, detail)

    def _reconnect(self, name: str) -> None:
        self._outcome[name] = self.cluster.hosts.reconnect(name, RECONNECT_TIMEOUT_S)

    def check(self) -> list[str]:
        """Retry the unreachable hosts; the ones that count as lost from now on."""
        now = time.monotonic()
        found = []
        for name in list(self.cluster.unreachable):
            if name in self.lost:
                continue
            thread = self._threads.get(name)
            if thread is not None and not thread.is_alive():
                del self._threads[name]
                outcome = self._outcome.pop(name, None)
                if outcome is None:
                    self.ok(name)
                    continue
                if answered(outcome):
                    self.lost[name] = (
                        f"its SSH connection dropped and it refuses new ones ({describe_connect_error(outcome)})"
                    )
                    found.append(name)
                    continue
            if now - self.last_ok[name] >= self.timeout_s:
                self.lost[name] = f"not heard from for {self.timeout_s:.0f} s (training.host_timeout_s)"
                found.append(name)
                continue
            if name not in self._threads and now - self._attempts.get(name, 0.0) >= RECONNECT_EVERY_S:
                self._attempts[name] = now
                thread = threading.Thread(target=self._reconnect, args=(name,), daemon=True)
                self._threads[name] = thread
                thread.start()
        return found


def _gang_stop_trigger(states: dict[str, HostState], names: list[str], need: int) -> str | None:
    """The host whose end stops the run everywhere, if any.

    The first failed host; a lost (or fenced) host only when fewer than
    ``need`` hosts remain or it is the rendezvous host (``names[0]``); else a
    stopped one.
    """
    failed = first_failed({name: s for name, s in states.items() if s.state == "failed"})
    if failed:
        return failed
    gone = sorted(
        (s.ended or 0.0, name)
        for name, s in states.items()
        if s.state == "lost" or (s.fenced and s.state == "stopped")
    )
    if gone and (len(names) - len(gone) < need or any(name == names[0] for _, name in gone)):
        return gone[0][1]
    stopped = sorted(name for name, s in states.items() if s.state in ("stopped", "missing") and not s.fenced)
    return stopped[0] if stopped else None


def follow_run(
    cluster: Cluster,
    record: RunRecord,
    write: Writer | None = None,
    poll_s: float = POLL_S,
) -> RunRecord:
    """Wait for the run to end on every host (streaming logs when ``write``), enforcing gang stop."""
    follower = LogFollower(cluster, record, write) if write else None
    say = write or (lambda _line: None)
    watch = HostWatch(cluster, cluster.spec.training.host_timeout_s)
    need = record.min_hosts or len(cluster.names)
    states: dict[str, HostState] = {}
    stopping = False
    last_status = time.monotonic()
    while True:
        live = [name for name in cluster.reachable if name not in states]
        if follower:
            for name, error in follower.poll(live).items():
                watch.failed(name, error)
        live = [name for name in cluster.reachable if name not in states]
        files = cluster.hosts.each(lambda name: read_state(cluster, record, name), live)
        for name, error in files.errors.items():
            watch.failed(name, error)
        for name, state in files.results.items():
            watch.ok(name)
            if state is not None and state.ended_here:
                states[name] = state
        if time.monotonic() - last_status >= STATUS_EVERY_S:
            last_status = time.monotonic()
            ask = [name for name in cluster.reachable if name not in states]
            answers = cluster.hosts.each(lambda name: agent_state(cluster, record, name), ask)
            for name, error in answers.errors.items():
                watch.failed(name, error)
            for name, state in answers.results.items():
                if state.state in ("lost", "missing"):
                    states[name] = state.model_copy(update={"ended": state.ended or time.time()})
        for name in watch.check():
            states[name] = HostState(state="lost", reason=watch.lost[name], ended=time.time())
            remaining = len(cluster.names) - sum(1 for s in states.values() if s.state == "lost")
            if name != cluster.names[0] and remaining >= need and not stopping:
                say(
                    f"gpufleet: host {name} lost: {watch.lost[name]}; the job re-forms on the "
                    f"{remaining} hosts left (training.min_hosts: {need})"
                )
            else:
                say(f"gpufleet: host {name} lost: {watch.lost[name]}")
        pending = [name for name in cluster.names if name not in states]
        trigger = _gang_stop_trigger(states, cluster.names, need)
        if trigger and not stopping and pending:
            stopping = True
            say(f"gpufleet: host {trigger} {states[trigger].state}; stopping the run on every host")
            # Every reachable host, not only the pending ones: a lost supervisor's torchrun may
            # live on (stop is harmless where the run already ended).
            _stop_hosts(cluster, record, cluster.reachable)
            continue
        if not pending:
            break
        time.sleep(poll_s)
    if follower:
        follower.poll(final=True)
    return finish_record(cluster, record, states)


def _why(record: RunRecord, states: dict[str, HostState], state: str) -> str | None:
    lost = [name for name, s in states.items() if s.state == "lost"]
    finished = [name for name, s in states.items() if s.state == "succeeded"]
    if state == "succeeded":
        if not lost:
            return None
        reasons = "; ".join(f"{name}: {states[name].reason}" for name in lost)
        return f"lost {', '.join(lost)} ({reasons}); the job re-formed and finished on {', '.join(finished)}"
    culprit = first_failed(states) or next(
        (name for name, s in states.items() if s.state in ("stopped", "missing", "unreachable")), None
    )
    if culprit is None:
        return None
    detail = states[culprit].reason or states[culprit].state
    return f"host {culprit} {states[culprit].state}: {detail}"


def finish_record(cluster: Cluster, record: RunRecord, states: dict[str, HostState]) -> RunRecord:
    """Fill end time, exit codes, states, the first failed host and why into run.json."""
    states = {name: states[name] for name in cluster.names if name in states}  # in spec order
    names = {name: states[name].state if name in states else "missing" for name in cluster.names}
    state = summarize_states(dict(names), record.min_hosts)
    ended = [s.ended for s in states.values() if s.ended is not None]
    updated = record.model_copy(
        update={
            "state": state,
            "exit_codes": {
                name: states[name].exit_code if name in states else None for name in cluster.names
            },
            "host_states": names,
            "first_failed": None if state == "succeeded" else first_failed(states),
            "ended": max(ended) if ended else time.time(),
            "why": _why(record, states, state),
            "lost_hosts": [name for name in cluster.names if names[name] == "lost"],
            "finished_hosts": [name for name in cluster.names if names[name] == "succeeded"],
        }
    )
    write_record(cluster, updated)
    return updated


# -- stopping and listing -------------------------------------------------------------------


def _stop_hosts(cluster: Cluster, record: RunRecord, names: list[str]) -> GroupResult[object]:
    def stop(name: str) -> object:
        tag = run_tag(cluster.spec.name, record.run, cluster.spec.host(name))
        return cluster.agent(
            name, "stop", record.run_dir[name], name, tag, str(STOP_GRACE_S), timeout=STOP_GRACE_S + 30
        )

    return cluster.hosts.each(stop, names)


def stop_run(cluster: Cluster, record: RunRecord) -> RunRecord:
    """Stop the run on every reachable host; nothing of it stays running there.

    Hosts that cannot be reached are recorded as ``unreachable``.
    """
    stopped = _stop_hosts(cluster, record, cluster.reachable)
    for name, error in stopped.errors.items():
        cluster.hosts.drop(name, str(error))
    return finish_record(cluster, record, _with_lost(record, host_states(cluster, record)))


def _with_lost(record: RunRecord, states: dict[str, HostState]) -> dict[str, HostState]:
    """Unreachable hosts that the record or the other hosts' supervisors counted as lost stay lost."""
    counted = set(record.lost_hosts) | {peer for s in states.values() for peer in s.lost_peers}
    return {
        name: HostState(state="lost", reason=f"the other hosts lost it; unreachable now ({state.reason})")
        if state.state == "unreachable" and name in counted
        else state
        for name, state in states.items()
    }


def list_runs(cluster: Cluster) -> list[RunRecord]:
    """Run records on the first reachable host, newest first."""
    if not cluster.reachable:
        raise GpufleetError("no host of the cluster is reachable")
    first = cluster.reachable[0]
    root = cluster.location.root if cluster.location.shared else HOME_RUNS_ROOT
    data = cluster.agent(first, "runs", root)
    raw_runs = data.get("runs")
    records = []
    for raw in raw_runs if isinstance(raw_runs, list) else []:
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


def refresh_run(cluster: Cluster, record: RunRecord) -> tuple[RunRecord, dict[str, HostState]]:
    """Live per-host states; a run found finished gets its record completed.

    An unreachable host that the other hosts' supervisors counted as lost is
    recorded as lost, so a detached run's record completes without it.
    """
    states = _with_lost(record, host_states(cluster, record))
    if record.ended is None and all(s.ended_here for s in states.values()):
        record = finish_record(cluster, record, states)
    return record, states
