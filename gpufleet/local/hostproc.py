"""One local host: its private files and its sshd, inside its namespaces.

Each host runs ``ip netns exec NS unshare --mount --uts --propagation private``
and, in that private mount namespace, overlays /etc with the host's folder
(``hosts/<host>/etc`` in the state folder): the RENDERED sshd_config and
authorized_keys plus the generated host key appear unchanged at
/etc/gpufleet/ssh, next to private hosts, passwd, group and shadow files. The
NAS stand-ins and the home folder are bind mounts. sshd starts in its own
session, so it outlives ``gpufleet up`` and dies by process group.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpufleet.derive.sshd import AUTHORIZED_KEYS_PATH, HOST_KEY_PATH, SSHD_CONFIG_PATH
from gpufleet.local.accounts import LoginAccount, hosts_file, with_account
from gpufleet.local.keys import KeyPair
from gpufleet.spec.models import ClusterSpec, HostSpec

SSHD = "/usr/sbin/sshd"
HOSTS_DIR = "hosts"
NAS_DIR = "_nas"
SSHD_LOG = "sshd.log"
DOCKERD_LOG = "dockerd.log"
NETNS_DIR = Path("/run/netns")
# sshd's privilege-separation chroot.
PRIVSEP_DIR = Path("/run/sshd")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

# Processes started by this Python process: reaped after `down` kills them so
# that a long-lived caller (tests, the bench) leaves no zombies behind.
_started: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class HostPaths:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def etc_work(self) -> Path:
        return self.root / "etc-work"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def nftables(self) -> Path:
        return self.root / "nftables.conf"

    @property
    def log(self) -> Path:
        return self.root / SSHD_LOG

    @property
    def dockerd_log(self) -> Path:
        return self.root / DOCKERD_LOG

    @property
    def cgroup_stash(self) -> Path:
        """An empty folder the start script parks the cgroup tree on while it mounts /sys."""
        return self.root / "cgroup"

    def in_etc(self, absolute: str) -> Path:
        """Where a file under /etc on the host lives in the overlay's upper folder."""
        assert absolute.startswith("/etc/")
        return self.etc / absolute[len("/etc/") :]


HOME = PurePosixPath("/home")


def in_private_home(mount: str) -> PurePosixPath | None:
    """A mount under /home, relative to it: its mount point lives in each host's private /home.

    The start script bind-mounts the host's own home folder over /home first, which
    hides everything under the machine's /home.
    """
    path = PurePosixPath(mount)
    if path == HOME or not path.is_relative_to(HOME):
        return None
    return path.relative_to(HOME)


def host_paths(state: Path, host: str) -> HostPaths:
    return HostPaths(state / HOSTS_DIR / host)


WORKSPACES_DIR = "_workspaces"
"""'_' is never in a share name: no clash with a share's stand-in folder."""


def nas_source(state: Path, share: str) -> Path:
    """A share's stand-in folder. Beside the state folder, not in it: `down` removes the
    state folder, but the NAS data (checkpoints, run logs) is the user's (`down --purge`)."""
    return nas_root(state) / share


def workspace_folder(state: Path, host: str) -> Path:
    """A docker host's /workspace, beside the NAS stand-ins (kept by `down`, removed by `--purge`)."""
    return nas_root(state) / WORKSPACES_DIR / host


def nas_root(state: Path) -> Path:
    """``<project>/.gpufleet/_nas/<cluster>``: '_' is never in a cluster name, so no clash."""
    return state.parent / NAS_DIR / state.name


def start_script(spec: ClusterSpec, host: HostSpec, paths: HostPaths, state: Path) -> str:
    """The shell run inside the host's namespaces; it ends by exec'ing sshd (same pid)."""
    q = shlex.quote
    overlay = f"lowerdir=/etc,upperdir={paths.etc},workdir={paths.etc_work}"
    lines = [
        f"nft -f {q(str(paths.nftables))}",
        f"mount -t overlay gpufleet-etc -o {q(overlay)} /etc",
        f"mount --bind {q(str(paths.home))} /home",
    ]
    for share in spec.nas:
        lines.append(f"mount --bind {q(str(nas_source(state, share.name)))} {q(share.mount)}")
        if share.read_only:
            lines.append(f"mount -o remount,bind,ro {q(share.mount)}")
    lines.append(f"hostname {q(host.name)}")
    if spec.container.memlock_unlimited:
        # As the rendered container's `ulimits: memlock: -1`; sessions inherit it from sshd.
        # Best effort: without CAP_SYS_RESOURCE (some sandboxes) the limit stays, and
        # preflight reports the real value.
        lines.append("ulimit -l unlimited 2>/dev/null || :")
    lines.append(f"exec {SSHD} -D -e -f {q(SSHD_CONFIG_PATH)}")
    return "\n".join(lines) + "\n"


def docker_start_script(
    spec: ClusterSpec, host: HostSpec, paths: HostPaths, dockerd: list[str], sshd_config: str
) -> str:
    """A docker-runtime host: its firewall, its own Docker daemon and its own login sshd.

    Entered with ``nsenter --net`` (not ``ip netns exec``, whose fresh /sys hides the cgroup
    hierarchies dockerd needs): the script mounts the namespace's own sysfs (so /sys/class/net
    shows the host's interfaces) with the machine's cgroup tree bound back into it. dockerd
    shares the host's mount namespace, so its containers' overlays and bind mounts vanish
    with the host, and it sees the host's private /etc and /home as a real host's daemon does.
    """
    q = shlex.quote
    overlay = f"lowerdir=/etc,upperdir={paths.etc},workdir={paths.etc_work}"
    cgroups = q(str(paths.cgroup_stash))
    lines = [
        f"nft -f {q(str(paths.nftables))}",
        f"mount -t overlay gpufleet-etc -o {q(overlay)} /etc",
        f"mount --bind {q(str(paths.home))} /home",
        f"mount --rbind /sys/fs/cgroup {cgroups}",
        "mount -t sysfs gpufleet-sys /sys",
        f"mount --rbind {cgroups} /sys/fs/cgroup",
        f"umount -l {cgroups}",
        "ip link set lo up",
        f"hostname {q(host.name)}",
        "ulimit -l unlimited 2>/dev/null || :",
        f"{' '.join(q(arg) for arg in dockerd)} >>{q(str(paths.dockerd_log))} 2>&1 &",
        f"exec {SSHD} -D -e -f {q(sshd_config)}",
    ]
    return "\n".join(lines) + "\n"


def start_argv(namespace: str, script: str) -> list[str]:
    return [
        "ip", "netns", "exec", namespace,
        "unshare", "--mount", "--uts", "--propagation", "private",
        "sh", "-ec", script,
    ]  # fmt: skip


def docker_start_argv(namespace: str, script: str) -> list[str]:
    return [
        "nsenter", f"--net={NETNS_DIR / namespace}",
        "unshare", "--mount", "--uts", "--propagation", "private",
        "sh", "-ec", script,
    ]  # fmt: skip


def _copy_system_file(source: str, target: Path, text: str) -> None:
    # Same owner and mode as the machine's file (shadow: root:shadow 0640).
    info = os.stat(source)
    target.write_text(text)
    os.chown(target, info.st_uid, info.st_gid)
    os.chmod(target, info.st_mode & 0o7777)


def _write_mode(path: Path, text: str, mode: int) -> None:
    """Write with exactly ``mode``, whatever the caller's umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


@dataclass(frozen=True)
class LoginFiles:
    """Where a host's login sshd finds its config, authorized_keys and host key (under /etc)."""

    sshd_config: str
    authorized_keys: str
    host_key: str


CONTAINER_LOGIN = LoginFiles(SSHD_CONFIG_PATH, AUTHORIZED_KEYS_PATH, HOST_KEY_PATH)
"""The process runtime's hosts log in as the container would: its rendered files, its paths."""


def prepare_host(
    spec: ClusterSpec,
    host: HostSpec,
    paths: HostPaths,
    rendered: dict[str, str],
    host_key: KeyPair,
    account: LoginAccount,
    system: tuple[str, str, str],
    login: LoginFiles = CONTAINER_LOGIN,
) -> None:
    """Write the host's folder. ``rendered`` maps file name -> text for this host."""
    ssh_dir = paths.in_etc(str(PurePosixPath(login.sshd_config).parent))
    ssh_dir.mkdir(parents=True, mode=0o755)
    # The overlay's upper folder lends its mode to the host's /etc: copy the real one
    # (a umask of 077 would otherwise hide /etc/passwd from the login user).
    os.chmod(paths.etc, os.stat("/etc").st_mode & 0o7777)
    for folder in (paths.etc / "gpufleet", ssh_dir):
        os.chmod(folder, 0o755)  # noqa: S103 - StrictModes: no group/world-writable dir on the key path
    paths.etc_work.mkdir(mode=0o700)
    paths.cgroup_stash.mkdir(mode=0o700)
    _write_mode(paths.in_etc(login.sshd_config), rendered["sshd_config"], 0o644)
    _write_mode(paths.in_etc(login.authorized_keys), rendered["authorized_keys"], 0o644)
    key_path = paths.in_etc(login.host_key)
    _write_mode(key_path, host_key.private_openssh, 0o600)
    _write_mode(key_path.with_name(key_path.name + ".pub"), host_key.public_line(host.name) + "\n", 0o644)
    passwd, group, shadow = with_account(*system, account)
    _copy_system_file("/etc/passwd", paths.etc / "passwd", passwd)
    _copy_system_file("/etc/group", paths.etc / "group", group)
    _copy_system_file("/etc/shadow", paths.etc / "shadow", shadow)
    _write_mode(paths.etc / "hosts", hosts_file(spec, host), 0o644)
    _write_mode(paths.etc / "hostname", host.name + "\n", 0o644)
    paths.nftables.write_text(rendered["nftables.conf"])
    home = paths.home / account.user
    home.mkdir(parents=True)
    os.chmod(paths.home, 0o755)  # noqa: S103 - /home on the host, like any /home
    os.chown(home, account.uid, account.gid)
    os.chmod(home, 0o700)
    for share in spec.nas:
        relative = in_private_home(share.mount)
        if relative is not None:
            _make_dirs(paths.home, relative)


def _make_dirs(base: Path, relative: PurePosixPath) -> None:
    """Mount point folders below ``base``: root-owned, 0755, like ensure_mountpoint's."""
    folder = base
    for part in relative.parts:
        folder = folder / part
        if not folder.exists():
            folder.mkdir(mode=0o755)
            os.chmod(folder, 0o755)  # noqa: S103 - a mount point, as on any machine


def start_host(
    namespace: str, script: str, log: Path, argv: list[str] | None = None, keep_fds: tuple[int, ...] = ()
) -> int:
    """Start the host's sshd in its own session; returns its pid (= process group id).

    ``keep_fds`` stay open in the host's processes (a lease lock its dockerd holds).
    """
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv or start_argv(namespace, script),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=keep_fds,
            env=_ENV,
        )
    _started[process.pid] = process
    return process.pid


def host_exited(pid: int) -> bool:
    process = _started.get(pid)
    return process is not None and process.poll() is not None


def kill_group(pid: int, namespace_inode: int | None) -> None:
    """SIGKILL the process group led by ``pid``, only if it is still in the host's namespace.

    The namespace check guards against a recycled pid of an unrelated process. A
    child this process started and has not reaped cannot be recycled, so it is
    killed without the check: right after starting (a rollback) it may not have
    entered its namespace yet, and would otherwise escape and outlive the cluster.
    One that ``poll()`` (host_exited) has reaped can be recycled: it gets the check.
    """
    process = _started.get(pid)
    ours = process is not None and process.returncode is None
    if not ours and (namespace_inode is None or not _in_namespace(pid, namespace_inode)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _in_namespace(pid: int, inode: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]"
    except OSError:
        return False


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def reap() -> None:
    """Collect the exit status of processes this Python process started and that have died."""
    for pid, process in list(_started.items()):
        if process.poll() is not None:
            del _started[pid]


def reap_wait(pids: list[int], timeout: float = 2.0) -> None:
    for pid in pids:
        process = _started.pop(pid, None)
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _started[pid] = process


def missing_dirs(path: str) -> list[str]:
    """The folders of ``path`` that do not exist yet, parents first."""
    missing = [str(p) for p in (Path(path), *Path(path).parents) if not p.exists()]
    return missing[::-1]


def machine_mountpoint(path: str) -> bool:
    """Whether a NAS mount point must exist on this machine (not so for one in the private /home)."""
    return in_private_home(path) is None


def ensure_mountpoint(path: str) -> None:
    """NAS mount points must exist on this machine to be bind-mounted over (empty, root-owned)."""
    Path(path).mkdir(parents=True, exist_ok=True, mode=0o755)


def remove_created_dirs(created: list[str], other_clusters: bool) -> None:
    """Remove the mount points `up` created, if empty, unless another cluster may mount them.

    With another gpufleet cluster up, a folder may be a mount point in its hosts'
    namespaces: removing it would silently detach their share, so it stays.
    """
    if other_clusters:
        return
    for path in reversed(created):
        with contextlib.suppress(OSError):  # not empty, or already gone: leave it
            os.rmdir(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
