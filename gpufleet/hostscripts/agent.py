"""The launcher's helper on each host: standard library only, shipped as ``python -c``.

Hosts do not have gpufleet installed, so the controller sends this file's
source with every call. Subcommands (each prints one JSON line):

- ``start CONFIG -- ARGV...``: start a supervisor in its own session (setsid)
  that runs ARGV with output to ``logs/HOST.log``; returns its pid at once, so
  the job survives the controller disconnecting. CONFIG is a JSON object (see
  ``Config``).
- ``status RUN_DIR HOST``: the host's state file, with ``state`` one of
  running / succeeded / failed / stopped / lost (the supervisor died) / missing.
- ``stop RUN_DIR HOST TAG GRACE_S``: TERM the supervisor, then KILL every
  process still carrying the run's tag in its environment.
- ``unpack RUN_DIR``: extract ``code.tar`` (sent over SFTP) into ``code/``.
- ``runs ROOT``: the run records under ROOT, newest first.

Run-folder layout: ``run.json`` (the controller's record), ``code/``,
``logs/<host>.log``, ``hosts/<host>.json`` (the host's state: pid, start, end,
exit code, state, reason), ``torchrun/<host>/`` (torchrun's per-worker logs).

While the job runs, the supervisors of a run send each other a UDP heartbeat
every second (to each host's address, on the rendezvous port + 1). That is how hosts notice, without a
controller, that a peer is gone: its port is closed (its supervisor died:
noticed in about 2 s) or it has been silent for ``host_timeout_s`` (a
partition, a host that is off). A host that hears from too few peers to
continue, or no longer from the rendezvous host, stops its own workers
(fencing), so no orphan keeps training after a partition heals. With
``min_hosts`` below the host count, survivors that still have enough peers
restart their workers instead, and torchrun re-forms the job without the lost
host.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from typing import Any

POLL_S = 0.25
BEAT_S = 1.0
LINGER_S = 2.5
# How long torchrun gets to end after SIGTERM before everything of the run is killed. A
# fenced host gets little: its torchrun's graceful shutdown talks to the rendezvous store
# on a host it cannot reach (it would only wait out the grace), and a host cut off from
# the others must stop training at once, not checkpoint over the job that goes on.
STOP_GRACE_S = 5.0
FENCE_GRACE_S = 1.0
TAG_VAR = "GPUFLEET_RUN_TAG"
MAX_BEAT_REASON = 2000
# Of a state file's ``state``: the ones a supervisor writes when the job ended.
FINAL_STATES = ("succeeded", "failed", "stopped")


def _payload(source: str) -> str:
    """What ``python -c`` runs: this source, knowing its own text (SOURCE)."""
    return f"SOURCE = {source!r}\nexec(compile(SOURCE, 'gpufleet-agent', 'exec'))\n"


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _state_path(run_dir: str, host: str) -> str:
    return os.path.join(run_dir, "hosts", f"{host}.json")


def tagged_pids(tag: str) -> list[int]:
    """Pids whose environment carries ``GPUFLEET_RUN_TAG=tag`` (only our own are readable)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def children(parent: int) -> list[int]:
    """Direct children of ``parent`` (torchrun's children are its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(parent) and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:  # gone, or another user's process: our supervisor runs as us
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_supervisor(pid: int, tag: str | None) -> bool:
    """``pid`` is alive and still our supervisor (its environment carries the tag), not a reused pid."""
    if pid <= 0 or not _alive(pid):
        return False
    if not tag:  # a state file written before tags were recorded
        return True
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return f"{TAG_VAR}={tag}".encode() in handle.read().split(b"\0")
    except OSError:
        return False


def _kill_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _terminate_tree(child: subprocess.Popen[bytes], tag: str, grace_s: float) -> None:
    """TERM torchrun (it forwards to its workers), then KILL whatever of the run is left."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    # Workers too: a rank stuck in a collective may never hear torchrun's forward.
    _kill_all(tagged_pids(tag), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (child.poll() is None or tagged_pids(tag)):
        time.sleep(0.1)
    # torchrun starts each worker in its own session: only the tag finds them all.
    _kill_all(tagged_pids(tag), signal.SIGKILL)
    if child.poll() is None:
        child.kill()
    child.wait()


class WorkerWatch(threading.Thread):
    """When each of torchrun's workers exits, to the millisecond (pidfd: no polling delay).

    ``first_exit`` is the first exit since the current set of workers started:
    the moment this host's part of the job broke. Comparing it across hosts
    names the host where a failure began; the peers' workers die of it a
    little later (their collectives fail), so their first exits come after.
    """

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent = parent
        self.first_exit: float | None = None
        self.seen: dict[int, float] = {}  # worker pid -> when it was first seen
        self.running: set[int] = set()
        self.done = threading.Event()

    def _exited(self, pid: int, when: float) -> None:
        self.running.discard(pid)
        if self.first_exit is None:
            self.first_exit = when

    def run(self) -> None:
        poller = select.poll()
        fds: dict[int, int] = {}
        pidfd_open = getattr(os, "pidfd_open", None)
        while not self.done.is_set():
            for pid in children(self.parent):
                if pid in self.seen:
                    continue
                if not self.running:  # a new set of workers: torchrun (re)started the group
                    self.first_exit = None
                self.seen[pid] = time.time()
                self.running.add(pid)
                if pidfd_open is not None:
                    try:
                        fd = pidfd_open(pid)
                    except OSError:
                        self._exited(pid, time.time())
                        continue
                    fds[fd] = pid
                    poller.register(fd, select.POLLIN)
            if pidfd_open is None:  # no pidfds: notice exits when polling
                for pid in list(self.running):
                    if not _alive(pid):
                        self._exited(pid, time.time())
                time.sleep(0.1)
                continue
            for fd, _event in poller.poll(100):
                self._exited(fds.pop(fd), time.time())
                poller.unregister(fd)
                os.close(fd)
        for fd in fds:
            os.close(fd)

    def kill_started_before(self, moment: float) -> int:
        """KILL the workers that were already running at ``moment`` (a group with a lost peer)."""
        victims = [pid for pid in self.running if self.seen.get(pid, 0) <= moment and _alive(pid)]
        _kill_all(victims, signal.SIGKILL)
        return len(victims)


class Peers:
    """UDP heartbeats with the run's other supervisors: who is alive, who is gone, who ended how."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.me: str = config["host"]
        self.run: str = config["run"]
        self.port = int(config["beat_port"])
        self.timeout_s = float(config["host_timeout_s"])
        self.peers: dict[str, str] = {
            name: address for name, address in config["peers"].items() if name != self.me
        }
        self.started = time.monotonic()
        self.heard: dict[str, float] = {}  # monotonic
        self.heard_wall: dict[str, float] = {}  # time.time(): when a peer was last alive
        self.refused: dict[str, float] = {}
        self.final: dict[str, dict[str, Any]] = {}
        self.lost: dict[str, str] = {}  # name -> why
        self.silent: set[str] = set()  # lost to silence (not to a refusal: that host answers)
        self.sent = 0.0
        family = socket.AF_INET6 if ":" in config["peers"][self.me] else socket.AF_INET
        self.inbox = socket.socket(family, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 10  # a run that just ended may still hold the port
        while True:
            try:
                self.inbox.bind((config["peers"][self.me], self.port))
                break
            except OSError as error:
                if time.monotonic() > deadline:
                    raise OSError(f"cannot bind the heartbeat port {self.port}/udp: {error}") from None
                time.sleep(0.5)
        self.inbox.setblocking(False)
        self.outbox: dict[str, socket.socket] = {}
        for name, address in self.peers.items():
            out = socket.socket(family, socket.SOCK_DGRAM)
            out.connect((address, self.port))
            out.setblocking(False)
            self.outbox[name] = out

    def send(self, state: str, extra: dict[str, Any] | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.sent < BEAT_S:
            return
        self.sent = now
        data = json.dumps({"run": self.run, "host": self.me, "state": state, **(extra or {})}).encode()
        for name, out in self.outbox.items():
            try:
                out.send(data)
            except ConnectionRefusedError:  # ICMP port unreachable: nothing listens there
                self.refused[name] = now
            except OSError:
                continue

    def receive(self) -> None:
        while True:
            try:
                data = self.inbox.recv(65536)
            except OSError:
                return
            try:
                beat = json.loads(data)
            except ValueError:
                continue
            name = beat.get("host") if isinstance(beat, dict) else None
            if beat.get("run") != self.run or name not in self.peers:
                continue
            self.heard[name] = time.monotonic()
            self.heard_wall[name] = time.time()
            self.refused.pop(name, None)
            if beat.get("state") in FINAL_STATES:
                self.final[name] = beat

    def newly_lost(self, ended: dict[str, dict[str, Any]]) -> list[str]:
        """Peers that count as lost from now on (each reported once).

        ``ended``: peers whose state file (on a shared run folder) says they
        ended, in case their last beats went missing.
        """
        now = time.monotonic()
        found = []
        for name in self.peers:
            if name in ended and name not in self.final:
                self.final[name] = ended[name]
            if name in self.lost or name in self.final:
                continue
            heard = self.heard.get(name)
            refused = self.refused.get(name)
            if heard is not None and refused is not None and refused > heard + BEAT_S:
                why = f"its supervisor is gone (nothing listens on {self.peers[name]}:{self.port}/udp)"
            elif now - (heard if heard is not None else self.started) >= self.timeout_s:
                why = f"not heard from for {self.timeout_s:.0f} s"
                self.silent.add(name)
            else:
                continue
            self.lost[name] = why
            found.append(name)
        return found

    def cut_off(self, lost: list[str]) -> str | None:
        """When peers in ``lost`` went silent and no other peer was heard lately either: how long
        each has been silent (this host is the one cut off); else None.

        Lately: for ``host_timeout_s`` less two beats. The peers' timeouts run out one after
        the other (each from its own last beat, up to a beat and a poll apart), and the first
        one to run out must already find this host isolated, or it would decide as if the
        others were still there. A peer that refuses the beats is no sign of isolation (its
        host answers).
        """
        silent = [name for name in lost if name in self.silent]
        if not silent:
            return None
        now = time.monotonic()
        quiet = max(1.5 * BEAT_S, self.timeout_s - 2 * BEAT_S)
        others = [name for name in self.peers if name not in self.final and name not in self.lost]
        silence = {name: now - self.heard.get(name, self.started) for name in [*silent, *others]}
        if any(seconds < quiet for seconds in silence.values()):
            return None
        return ", ".join(f"{name} silent for {seconds:.0f} s" for name, seconds in sorted(silence.items()))

    def close(self) -> None:
        self.inbox.close()
        for out in self.outbox.values():
            out.close()


def _ended_peers(run_dir: str, host: str) -> dict[str, dict[str, Any]]:
    """On a shared run folder: the other hosts whose state file says their job ended."""
    folder = os.path.join(run_dir, "hosts")
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    ended = {}
    for name in sorted(names):
        peer = name[: -len(".json")]
        if not name.endswith(".json") or peer == host:
            continue
        state = _read_json(os.path.join(folder, name)) or {}
        if state.get("state") in FINAL_STATES:
            ended[peer] = state
    return ended


def _peer_failure(ended: dict[str, dict[str, Any]], ignore: set[str]) -> str | None:
    """The first peer failure that stops this host too (gang semantics), said for people
    ("host node-1 failed (...)"); a fenced peer's end stops no one."""
    for name, state in sorted(ended.items()):
        if name not in ignore and state.get("state") in ("failed", "stopped") and not state.get("fenced"):
            why = state.get("reason")
            # Its own reason when it has one worth passing on ("failed: lost node-2 ...").
            detail = f" ({why})" if isinstance(why, str) and why not in ("", "failed") else ""
            return f"host {name} {state['state']}{detail}"
    return None


def _decide(config: dict[str, Any], peers: Peers, lost: list[str]) -> tuple[str, bool]:
    """After ``lost`` peers went missing: (why this host stops, fenced) or ("", False) to go on."""
    me = config["host"]
    rdzv = config["rdzv_host"]
    names = ", ".join(lost)
    detail = "; ".join(f"{name}: {peers.lost[name]}" for name in lost)
    silence = peers.cut_off(lost)
    if silence:
        return (f"stopped (fenced): cannot reach any other host ({silence})", True)
    if rdzv in peers.lost and me != rdzv:
        return (
            f"stopped: the rendezvous host {rdzv} was lost ({peers.lost[rdzv]}); the job cannot "
            "re-form without it",
            False,
        )
    alive = 1 + sum(1 for name in peers.peers if name not in peers.lost and name not in peers.final)
    need = int(config["min_hosts"])
    if alive < need:
        return (
            f"stopped: lost {names} ({detail}); {alive} of {len(peers.peers) + 1} hosts remain, "
            f"fewer than min_hosts={need}",
            False,
        )
    return ("", False)


def _linger(peers: Peers, run_dir: str, host: str) -> None:
    """The job failed here: was a peer lost? Its workers' deaths often fail ours first.

    A few more beats tell (a peer whose supervisor is gone refuses them), so
    that the state file names the lost peer, not only this host's failure.
    """
    deadline = time.monotonic() + LINGER_S
    while time.monotonic() < deadline:
        peers.send("running", force=True)
        time.sleep(0.25)
        peers.receive()
        if peers.newly_lost(_ended_peers(run_dir, host)):
            return


def supervise(config: dict[str, Any], argv: list[str]) -> int:
    run_dir, host, tag = config["run_dir"], config["host"], config["tag"]
    max_s = float(config.get("max_s", 0))
    state_path = _state_path(run_dir, host)
    state = _read_json(state_path) or {}
    stop_requested: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        peers: Peers | None = Peers(config) if config.get("peers") and len(config["peers"]) > 1 else None
    except OSError as error:
        print(f"gpufleet: {error}", flush=True)
        state.update({"state": "failed", "exit_code": 1, "ended": time.time(), "reason": str(error)})
        _write_json(state_path, state)
        return 1
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=os.path.join(run_dir, "code"))
    watch = WorkerWatch(child.pid)
    watch.start()
    reason = ""
    fenced = False
    deadline = time.monotonic() + max_s if max_s > 0 else None
    while child.poll() is None:
        time.sleep(POLL_S)
        ended = _ended_peers(run_dir, host)
        if peers is not None:
            peers.send("running")
            peers.receive()
            lost = peers.newly_lost(ended)
            if lost:
                why, fenced = _decide(config, peers, lost)
                if why:
                    reason = why
                else:
                    cutoff = min(peers.heard_wall.get(name, time.time()) for name in lost) + BEAT_S
                    killed = watch.kill_started_before(cutoff)
                    print(
                        f"gpufleet: lost {', '.join(f'{n} ({peers.lost[n]})' for n in lost)}; re-forming "
                        f"the job without it (restarted {killed} local workers)",
                        flush=True,
                    )
            ended = {**ended, **peers.final}
        peer_failure = _peer_failure(ended, set(peers.lost) if peers else set())
        if stop_requested:
            reason = f"stopped ({stop_requested[0]})"
        elif reason:
            pass
        elif peer_failure:
            reason = f"stopped: {peer_failure}"
        elif deadline is not None and time.monotonic() > deadline:
            reason = f"stopped: ran past the {max_s:.0f} s limit"
        if reason:
            print(f"gpufleet: {reason}", flush=True)
            _terminate_tree(child, tag, grace_s=FENCE_GRACE_S if fenced else STOP_GRACE_S)
            break
    code = child.wait()
    failure = "failed"
    if peers is not None and code != 0 and not reason:
        _linger(peers, run_dir, host)
        if peers.lost:  # the job broke here because a peer was lost: say so
            failure = "failed: lost " + "; ".join(
                f"{name} ({why})" for name, why in sorted(peers.lost.items())
            )
    watch.done.set()
    watch.join(timeout=2)
    if reason and code == 0:
        code = 143
    # Anything a worker left behind (daemons, a hung rank) goes with the run.
    _kill_all(tagged_pids(tag), signal.SIGKILL)
    final = "succeeded" if code == 0 else ("stopped" if reason else "failed")
    state.update(
        {
            "state": final,
            "exit_code": code,
            "ended": time.time(),
            "reason": reason or ("ok" if code == 0 else failure),
            "failed_at": watch.first_exit if final == "failed" else None,
            "fenced": fenced,
            "lost_peers": sorted(peers.lost) if peers else [],
        }
    )
    if peers is not None:
        for _ in range(3):  # UDP: say it more than once
            # The reason shortened: one datagram, however many peers it names.
            said = {"fenced": fenced, "exit_code": code, "reason": state["reason"][:MAX_BEAT_REASON]}
            peers.send(final, said, force=True)
            time.sleep(0.05)
        peers.close()
    _write_json(state_path, state)  # last: once it says the job ended, nothing of it is left
    return code


def start(config: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    run_dir, host, tag = config["run_dir"], config["host"], config["tag"]
    for sub in ("hosts", "logs", "code"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    state_path = _state_path(run_dir, host)
    started = {"started": time.time(), "host": host, "tag": tag, "state": "running"}
    try:  # O_EXCL: of two starts of one run on one host, only one gets past here
        fd = os.open(state_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return {"error": f"{state_path} exists: run already started on {host}"}
    with os.fdopen(fd, "w") as handle:
        json.dump(started, handle)
    try:
        log = open(os.path.join(run_dir, "logs", f"{host}.log"), "ab")  # noqa: SIM115 (handed to the child)
        env = dict(os.environ, **{TAG_VAR: tag})
        proc = subprocess.Popen(
            [sys.executable, "-c", _payload(_own_source()), "supervise", json.dumps(config), "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    except BaseException:
        os.remove(state_path)
        raise
    state = _read_json(state_path) or {}  # the supervisor may already have ended and written its exit
    _write_json(state_path, {**started, **state, "pid": proc.pid})
    return {"pid": proc.pid}


def status(run_dir: str, host: str) -> dict[str, Any]:
    state = _read_json(_state_path(run_dir, host))
    if state is None:
        return {"state": "missing"}
    if state.get("state") not in FINAL_STATES:
        tag = state.get("tag")
        pid = state.get("pid")
        alive = _is_supervisor(pid if isinstance(pid, int) else 0, tag if isinstance(tag, str) else None)
        state["state"] = "running" if alive else "lost"
        if not alive:
            state["reason"] = "its supervisor is gone (killed, or the host restarted)"
    log_path = os.path.join(run_dir, "logs", f"{host}.log")
    state["log_bytes"] = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    return state


def stop(run_dir: str, host: str, tag: str, grace_s: str) -> dict[str, Any]:
    state_path = _state_path(run_dir, host)
    state = _read_json(state_path) or {}
    pid = state.get("pid")
    pid = pid if isinstance(pid, int) else 0
    recorded = state.get("tag")
    own = recorded if isinstance(recorded, str) and recorded else tag
    # Only a pid that is still this run's supervisor: a reused pid belongs to someone else.
    if state.get("state") not in FINAL_STATES and _is_supervisor(pid, own):
        _kill_all([pid], signal.SIGTERM)
        deadline = time.monotonic() + float(grace_s)
        while time.monotonic() < deadline and _is_supervisor(pid, own):
            time.sleep(0.1)
    leftovers = tagged_pids(tag)
    _kill_all(leftovers, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and tagged_pids(tag):
        time.sleep(0.1)
    state = _read_json(state_path) or state
    if state and state.get("state") not in FINAL_STATES:
        state.update(
            {"state": "stopped", "exit_code": 137, "ended": time.time(), "reason": "stopped (killed)"}
        )
        _write_json(state_path, state)
    return {"killed": len(leftovers), "left": len(tagged_pids(tag))}


def unpack(run_dir: str) -> dict[str, Any]:
    archive = os.path.join(run_dir, "code.tar")
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(os.path.join(run_dir, "code"), filter="data")
        except TypeError:  # Python without extraction filters; the archive is our own
            tar.extractall(os.path.join(run_dir, "code"))  # noqa: S202
    os.remove(archive)
    return {"ok": True}


def runs(root: str) -> dict[str, Any]:
    root = os.path.expanduser(root)
    found = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            record = _read_json(os.path.join(root, name, "run.json"))
            if record is not None:
                found.append(record)
    found.sort(key=lambda r: r.get("started", 0), reverse=True)
    return {"runs": found}


def main(args: list[str]) -> int:
    command, rest = args[0], args[1:]
    if command == "supervise":
        split = rest.index("--")
        return supervise(json.loads(rest[0]), rest[split + 1 :])
    if command == "start":
        split = rest.index("--")
        result = start(json.loads(rest[0]), rest[split + 1 :])
    elif command == "status":
        result = status(*rest)
    elif command == "stop":
        result = stop(*rest)
    elif command == "unpack":
        result = unpack(*rest)
    elif command == "runs":
        result = runs(*rest)
    else:
        result = {"error": f"unknown command {command!r}"}
    print(json.dumps(result))
    return 0


def _own_source() -> str:
    """The supervisor re-runs this source: the controller defines SOURCE before exec'ing it."""
    source = globals().get("SOURCE")
    if isinstance(source, str):
        return source
    with open(__file__) as handle:
        return handle.read()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
