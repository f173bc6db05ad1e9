"""Docker-runtime hosts: a daemon per host, its own login, the rendered compose folder deployed.

Each host's daemon keeps its images in a data-root leased from the machine-wide
cache (``<cache>/docker/hosts/<host>-<k>``): the lease is an flock that the
daemon itself holds (the lock's descriptor is inherited by dockerd), so it
ends when the daemon does, however it ends, and a later cluster's host of the
same name finds the image already loaded. Sockets and exec-roots live under
``/run/gpufleet`` because a unix socket path has at most 108 bytes, which a
project's state folder can exceed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpufleet.derive.container import PEERS_FILE
from gpufleet.errors import GpufleetError
from gpufleet.inventory import InventoryHost
from gpufleet.local import dockerd
from gpufleet.local.deploy import DeployFile, compose, deploy_and_compose_up
from gpufleet.render.renderer import RenderedTree, file_mode
from gpufleet.spec.models import ClusterSpec, HostSpec

RUN_BASE = Path("/run/gpufleet")
DATA_ROOTS = PurePosixPath("docker", "hosts")
MAX_LEASES = 64
CONTAINER_HOST_KEY = "ssh_host_ed25519_key"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Lease:
    data_root: Path
    fd: int  # flock held; passed to the host's dockerd, then closed here


def run_dir(cluster: str, host: str) -> Path:
    return RUN_BASE / hashlib.sha256(f"{cluster}/{host}".encode()).hexdigest()[:12]


def daemon_paths(data_root: Path, cluster: str, host: str) -> dockerd.DaemonPaths:
    return dockerd.DaemonPaths(data_root=data_root, run_dir=run_dir(cluster, host))


def lease_data_root(cache: Path, host: str) -> Lease:
    """The first data-root of this host name that no running daemon holds."""
    base = cache / DATA_ROOTS
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index in range(MAX_LEASES):
        root = base / f"{host}-{index}"
        fd = os.open(f"{root}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        root.mkdir(exist_ok=True, mode=0o700)
        return Lease(root, fd)
    raise GpufleetError(
        f"host {host}: all {MAX_LEASES} Docker data-roots for this host name under {base} are in "
        "use by running clusters: take one down"
    )


def prepare_run_dir(paths: dockerd.DaemonPaths) -> None:
    """Root-owned; traversable (not listable) so the host's login reaches the socket (group-owned)."""
    RUN_BASE.mkdir(mode=0o755, exist_ok=True)
    paths.run_dir.mkdir(mode=0o711, exist_ok=True)
    os.chmod(paths.run_dir, 0o711)  # noqa: S103 - traverse only: the socket has its own group
    paths.exec_root.mkdir(mode=0o700, exist_ok=True)


def daemon_pid(paths: dockerd.DaemonPaths) -> int | None:
    try:
        return int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_daemons(
    hosts: dict[str, dockerd.DaemonPaths],
    alive: Callable[[str], bool],
    logs: dict[str, Path],
    timeout: float = dockerd.READY_TIMEOUT_S,
) -> dict[str, dockerd.Daemon]:
    """Until every host's daemon answers on its socket; names the host and shows its log."""
    deadline = time.monotonic() + timeout
    ready: dict[str, dockerd.Daemon] = {}
    while len(ready) < len(hosts):
        for host, paths in hosts.items():
            if host in ready:
                continue
            pid = daemon_pid(paths)
            if pid is not None and paths.socket.exists():
                daemon = dockerd.Daemon(pid, paths)
                if dockerd.docker_cli(daemon, "version", "--format", "{{.Server.Version}}").returncode == 0:
                    ready[host] = daemon
                    continue
            if not alive(host) or time.monotonic() > deadline:
                why = "exited" if not alive(host) else f"did not answer within {timeout:.0f} s"
                raise GpufleetError(
                    f"host {host}: step 'start the Docker daemon': the host {why}; its dockerd log:\n    "
                    + _tail(logs[host])
                )
        time.sleep(0.1)
    return ready


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(text[-lines:]) or "(empty log)"


def remove_containers(daemon: dockerd.Daemon) -> None:
    """Every container and volume of a leased data-root is this cluster's (or a dead one's)."""
    listed = dockerd.docker_cli(daemon, "ps", "-aq", timeout=30)
    ids = listed.stdout.split()
    if ids:
        dockerd.docker_cli(daemon, "rm", "-f", *ids, timeout=60)
    # Named volumes too (prune keeps them on newer daemons): they only point at NAS folders,
    # whose data a volume's removal never touches.
    volumes = dockerd.docker_cli(daemon, "volume", "ls", "-q", timeout=30).stdout.split()
    if volumes:
        dockerd.docker_cli(daemon, "volume", "rm", "-f", *volumes, timeout=60)


def deploy_files(
    tree: RenderedTree, host: HostSpec, authorized_keys: str, container_host_key: str
) -> dict[str, DeployFile]:
    """The rendered ``hosts/<name>/`` folder (its authorized_keys with the controller's key), the
    cluster's ``peers/`` folder, and the container's generated host key (0600)."""
    folder = PurePosixPath("hosts", host.name)
    files = {
        path.name: DeployFile(text, file_mode(path)) for path, text in tree.items() if path.parent == folder
    }
    files["authorized_keys"] = DeployFile(authorized_keys, files["authorized_keys"].mode)
    peers = PurePosixPath("peers", PEERS_FILE)  # the cluster's, beside the compose file (see its comment)
    files[str(peers)] = DeployFile(tree[peers], file_mode(peers))
    files[CONTAINER_HOST_KEY] = DeployFile(container_host_key, 0o600)
    return files


def compose_up_all(
    spec: ClusterSpec,
    logins: dict[str, InventoryHost],
    private_key: str,
    files: dict[str, dict[str, DeployFile]],
    progress: Progress,
) -> None:
    def one(host: str) -> None:
        result = deploy_and_compose_up(logins[host], private_key, spec.name, files[host])
        if result.status != 0:
            raise GpufleetError(
                f"host {host}: step 'docker-compose up' failed (exit {result.status}):\n    {result.tail()}"
            )
        progress(f"{host}: container started")

    _all(one, list(logins))


def container_log_tails(spec: ClusterSpec, logins: dict[str, InventoryHost], private_key: str) -> str:
    tails = []
    for host, login in logins.items():
        with contextlib.suppress(GpufleetError):
            result = compose(login, private_key, spec.name, "logs", "--no-color", "--tail", "15", timeout=30)
            tails.append(f"\n  {host} container log:\n    {result.tail(15)}")
    return "".join(tails)


def _all(work: Callable[[str], None], hosts: list[str]) -> None:
    """Run ``work`` for every host at once; the first failure is raised after all have ended."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = [pool.submit(work, host) for host in hosts]
    for future in futures:
        future.result()


def stop_daemons(paths: list[dockerd.DaemonPaths]) -> None:
    """Containers removed, then SIGTERM each daemon (it unmounts what it mounted), in parallel."""

    def one(daemon_paths: dockerd.DaemonPaths) -> None:
        pid = daemon_pid(daemon_paths)
        if pid is None or not _is_dockerd(pid):
            return
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            remove_containers(dockerd.Daemon(pid, daemon_paths))
        dockerd.stop(pid)

    with ThreadPoolExecutor(max_workers=max(1, len(paths))) as pool:
        list(pool.map(one, paths))


def _is_dockerd(pid: int) -> bool:
    """The pidfile's pid is still a dockerd (not a recycled pid)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == dockerd.DOCKERD
    except OSError:
        return False


def remove_run_dir(paths: dockerd.DaemonPaths) -> None:
    dockerd.unmount_below(paths.run_dir)
    subprocess.run(["rm", "-rf", "--one-file-system", str(paths.run_dir)], check=False)


def cgroup_parent(cluster: str, host: str) -> str:
    return f"gpufleet-{hashlib.sha256(f'{cluster}/{host}'.encode()).hexdigest()[:12]}"


def remove_cgroups(parent: str, root: Path = Path("/sys/fs/cgroup")) -> None:
    """The (empty) cgroups dockerd made under ``--cgroup-parent`` in every hierarchy."""
    for hierarchy in [root, *root.glob("*")]:
        folder = hierarchy / parent
        if not folder.is_dir():
            continue
        for child in sorted(folder.glob("*/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                child.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()
