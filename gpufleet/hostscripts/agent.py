"""The launcher's helper on each host: standard library only, shipped as ``python -c``.

Hosts do not have gpufleet installed, so the controller sends this file's
source with every call. Subcommands (each prints one JSON line):

- ``start RUN_DIR HOST TAG MAX_S -- ARGV...``: start a supervisor in its own
  session (setsid) that runs ARGV with output to ``logs/HOST.log``; returns
  its pid at once, so the job survives the controller disconnecting.
- ``status RUN_DIR HOST``: running / succeeded / failed / stopped / lost.
- ``stop RUN_DIR HOST TAG GRACE_S``: TERM the supervisor, then KILL every
  process still carrying the run's tag in its environment.
- ``unpack RUN_DIR``: extract ``code.tar`` (sent over SFTP) into ``code/``.
- ``runs ROOT``: the run records under ROOT, newest first.

Run-folder layout: ``run.json`` (the controller's record), ``code/``,
``logs/<host>.log``, ``hosts/<host>.json`` (pid, start, end, exit code),
``torchrun/<host>/`` (torchrun's per-worker logs).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from typing import Any

POLL_S = 0.5
TAG_VAR = "GPUFLEET_RUN_TAG"


def _payload(source: str) -> str:
    """What ``python -c`` runs: this source, knowing its own text (SOURCE)."""
    return f"SOURCE = {source!r}\nexec(compile(SOURCE, 'gpufleet-agent', 'exec'))\n"


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
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


def _peer_failure(run_dir: str, host: str) -> str | None:
    """On a shared run folder, another host's failure stops this one (gang semantics)."""
    folder = os.path.join(run_dir, "hosts")
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    for name in sorted(names):
        if not name.endswith(".json") or name == f"{host}.json":
            continue
        state = _read_json(os.path.join(folder, name)) or {}
        code = state.get("exit_code")
        if code is not None and code != 0:
            return name[: -len(".json")]
    return None


def supervise(run_dir: str, host: str, tag: str, max_s: float, argv: list[str]) -> int:
    state_path = _state_path(run_dir, host)
    state = _read_json(state_path) or {}
    stop_requested: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=os.path.join(run_dir, "code"))
    reason = ""
    deadline = time.monotonic() + max_s if max_s > 0 else None
    while child.poll() is None:
        time.sleep(POLL_S)
        peer = _peer_failure(run_dir, host)
        if stop_requested:
            reason = f"stopped ({stop_requested[0]})"
        elif peer:
            reason = f"stopped: host {peer} failed"
        elif deadline is not None and time.monotonic() > deadline:
            reason = f"stopped: ran past the {max_s:.0f} s limit"
        if reason:
            print(f"gpufleet: {reason}", flush=True)
            _terminate_tree(child, tag, grace_s=5.0)
            break
    code = child.wait()
    if reason and code == 0:
        code = 143
    # Anything a worker left behind (daemons, a hung rank) goes with the run.
    _kill_all(tagged_pids(tag), signal.SIGKILL)
    state.update(
        {"exit_code": code, "ended": time.time(), "reason": reason or ("ok" if code == 0 else "failed")}
    )
    _write_json(state_path, state)
    return code


def start(run_dir: str, host: str, tag: str, max_s: str, argv: list[str]) -> dict[str, Any]:
    for sub in ("hosts", "logs", "code"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    state_path = _state_path(run_dir, host)
    started = {"started": time.time(), "host": host, "tag": tag}
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
            [
                sys.executable,
                "-c",
                _payload(_own_source()),
                "supervise",
                run_dir,
                host,
                tag,
                max_s,
                "--",
                *argv,
            ],
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
    code = state.get("exit_code")
    if code is not None:
        name = (
            "succeeded"
            if code == 0
            else ("stopped" if str(state.get("reason", "")).startswith("stopped") else "failed")
        )
    else:
        tag = state.get("tag")
        name = "running" if _is_supervisor(int(state.get("pid", 0)), str(tag) if tag else None) else "lost"
    log_path = os.path.join(run_dir, "logs", f"{host}.log")
    state.update({"state": name, "log_bytes": os.path.getsize(log_path) if os.path.exists(log_path) else 0})
    return state


def stop(run_dir: str, host: str, tag: str, grace_s: str) -> dict[str, Any]:
    state_path = _state_path(run_dir, host)
    state = _read_json(state_path) or {}
    pid = int(state.get("pid", 0))
    own = str(state.get("tag") or tag)
    # Only a pid that is still this run's supervisor: a reused pid belongs to someone else.
    if state.get("exit_code") is None and _is_supervisor(pid, own):
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
    if state and state.get("exit_code") is None:
        state.update({"exit_code": 137, "ended": time.time(), "reason": "stopped (killed)"})
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
        run_dir, host, tag, max_s = rest[:split]
        return supervise(run_dir, host, tag, float(max_s), rest[split + 1 :])
    if command == "start":
        split = rest.index("--")
        run_dir, host, tag, max_s = rest[:split]
        result = start(run_dir, host, tag, max_s, rest[split + 1 :])
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
