"""A private Docker daemon: its own data-root, exec-root, pidfile and socket.

Local hosts each run one inside their namespaces (as a real host runs its
own), and image builds run one on the machine's network. Every daemon is
started with ``--iptables=false --ip6tables=false --ip-forward=false
--bridge=none``: it never touches the machine's firewall, bridges or
forwarding. Containers use host networking (what NCCL needs anyway), and
builds ``--network host``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import GpufleetError

DOCKERD = "dockerd"
# Debian's docker.io CLI, which matches its daemon; a newer CLI earlier on PATH may lack buildx.
DOCKER_CLI = "/usr/bin/docker"
STORAGE_DRIVER = "overlay2"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class DaemonPaths:
    """Where one daemon keeps everything. ``data_root`` may outlive the daemon (it caches images)."""

    data_root: Path
    run_dir: Path  # exec-root, pidfile, socket, log: removed with the daemon

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def log(self) -> Path:
        return self.run_dir / "dockerd.log"

    @property
    def host_url(self) -> str:
        return f"unix://{self.socket}"


def daemon_argv(paths: DaemonPaths, group: int | None = None, cgroup_parent: str | None = None) -> list[str]:
    argv = [
        DOCKERD,
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--pidfile={paths.pidfile}",
        f"--host={paths.host_url}",
        f"--storage-driver={STORAGE_DRIVER}",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--bridge=none",
    ]
    if group is not None:
        argv.append(f"--group={group}")  # the socket's group: the host's docker_ssh login
    if cgroup_parent:
        argv.append(f"--cgroup-parent={cgroup_parent}")
    return argv


@dataclass(frozen=True)
class Daemon:
    pid: int
    paths: DaemonPaths

    def docker(self, *args: str) -> list[str]:
        """argv of the docker CLI talking to this daemon."""
        return [DOCKER_CLI, "--host", self.paths.host_url, *args]


# Daemons this process started: reaped when stopped, so long-lived callers leave no zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


def start(
    paths: DaemonPaths,
    enter: Sequence[str] = (),
    group: int | None = None,
    cgroup_parent: str | None = None,
) -> Daemon:
    """Start dockerd in its own session; ``enter`` is an argv prefix such as ``nsenter -t PID -m -n``."""
    paths.data_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.exec_root.mkdir(exist_ok=True, mode=0o700)
    with open(paths.log, "ab") as out:
        process = subprocess.Popen(
            [*enter, *daemon_argv(paths, group, cgroup_parent)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=_ENV,
        )
    _children[process.pid] = process
    return Daemon(process.pid, paths)


def exited(daemon: Daemon) -> bool:
    process = _children.get(daemon.pid)
    if process is not None:
        return process.poll() is not None
    return not _alive(daemon.pid)


def log_tail(paths: DaemonPaths, lines: int = 8) -> str:
    try:
        text = paths.log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no daemon log)"
    return "\n    ".join(text[-lines:]) or "(empty daemon log)"


def wait_ready(daemon: Daemon, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Until the daemon answers on its socket; a clear error with its log when it dies or hangs."""
    deadline = time.monotonic() + timeout
    while True:
        if daemon.paths.socket.exists():
            probe = subprocess.run(
                daemon.docker("version", "--format", "{{.Server.Version}}"),
                capture_output=True,
                text=True,
                check=False,
                env=_ENV,
            )
            if probe.returncode == 0:
                return
        if exited(daemon):
            raise GpufleetError(
                f"{what}: the Docker daemon exited while starting; its log ({daemon.paths.log}):\n    "
                + log_tail(daemon.paths)
            )
        if time.monotonic() > deadline:
            raise GpufleetError(
                f"{what}: the Docker daemon did not answer within {timeout:.0f} s; its log "
                f"({daemon.paths.log}):\n    " + log_tail(daemon.paths)
            )
        time.sleep(0.1)


def stop(pid: int, paths: DaemonPaths | None = None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (dockerd stops its containers and unmounts), then SIGKILL after ``timeout``.

    ``pid`` must be a daemon's: callers check that it is still the one they started.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _reap(pid, block=True)
    if paths is not None:
        unmount_below(paths.run_dir)


def _reap(pid: int, block: bool = False) -> None:
    process = _children.get(pid)
    if process is None:
        return
    try:
        process.wait(5.0 if block else 0.0)
    except subprocess.TimeoutExpired:
        return
    _children.pop(pid, None)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def mounts_below(folder: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``folder`` in this mount namespace, deepest first."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    prefix = str(folder).rstrip("/")
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def unmount_below(folder: Path, run: Callable[..., object] = subprocess.run) -> None:
    """A daemon on the machine's mount namespace leaves ``exec-root/netns/default`` (nsfs) mounted."""
    for point in mounts_below(folder):
        run(["umount", "-l", point], capture_output=True, check=False)


def docker_cli(daemon: Daemon, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        daemon.docker(*args), capture_output=True, text=True, check=False, env=_ENV, timeout=timeout
    )
