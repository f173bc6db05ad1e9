"""`up` and `down` for ``provisioner: local`` clusters (see gpufleet.local for the contract)."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gpufleet.environment.lockfile import Lock
from gpufleet.errors import GpufleetError
from gpufleet.inventory import STATE_DIR, Inventory, load_inventory, state_dir
from gpufleet.local import hostproc, images, netns, preflight_tools
from gpufleet.local.accounts import choose_account
from gpufleet.local.build import DOCKER_STEPS, PROCESS_STEPS, Build, run_steps
from gpufleet.local.names import (
    check_names,
    controller_address,
    controller_link,
    host_namespace,
    lan_namespace,
)
from gpufleet.local.record import LocalRecord, read_record, spec_fingerprint
from gpufleet.local.teardown import teardown
from gpufleet.spec.models import ClusterSpec

Progress = Callable[[str], None]
DOCKER_LOGIN_TIMEOUT_S = 60.0
"""Containers start their sshd after the entrypoint has installed its files."""


def _quiet(_: str) -> None:
    pass


def namespaces_of(spec: ClusterSpec) -> list[str]:
    """Hosts first, the LAN last (deleting it last keeps the hosts' veths attached till the end)."""
    return [host_namespace(spec.name, h.name) for h in spec.hosts] + [lan_namespace(spec.name)]


def cluster_is_up(spec: ClusterSpec, project_root: Path) -> bool:
    """True when the state folder, every namespace and every host's sshd are there."""
    folder = state_dir(project_root, spec.name)
    record = read_record(folder)
    return record is not None and _healthy(record, folder)


def _healthy(record: LocalRecord, folder: Path) -> bool:
    if not (folder / "inventory.json").is_file() or len(record.pids) + 1 != len(record.namespaces):
        return False
    if not all(netns.namespace_exists(ns) for ns in record.namespaces):
        return False
    for host, pid in record.pids.items():
        inode = netns.namespace_inode(host_namespace(record.cluster, host))
        if inode is None or not _alive_in(pid, inode):
            return False
    return True


def _alive_in(pid: int, inode: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]"
    except OSError:
        return False


@contextmanager
def _project_lock(project_root: Path) -> Iterator[None]:
    """Serialises up/down within a project: two `up`s of one cluster at once would both build."""
    base = project_root / STATE_DIR
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def cluster_up(
    spec: ClusterSpec,
    project_root: Path,
    progress: Progress = _quiet,
    login_timeout: float = 15.0,
    lock: Lock | None = None,
) -> Inventory:
    """``lock``: the stack's lock (``gpufleet up`` passes it); without one, a machine-wide cached
    lock of the spec's packages (specs without a stack file: tests, benchmarks)."""
    preflight_tools.check_provisioner(spec)
    check_names(spec)
    preflight_tools.check_root()
    with _project_lock(project_root):
        return _up(spec, project_root, progress, login_timeout, lock)


def _up(
    spec: ClusterSpec, project_root: Path, progress: Progress, login_timeout: float, lock: Lock | None
) -> Inventory:
    folder = state_dir(project_root, spec.name)
    record = read_record(folder)
    if record is not None:
        if record.spec_fingerprint != spec_fingerprint(spec):
            raise GpufleetError(
                f"cluster {spec.name!r} is up with a different spec: run gpufleet down, then gpufleet up"
            )
        if _healthy(record, folder):
            progress(f"cluster {spec.name!r} is already up; nothing changed")
            return load_inventory(folder)
        raise GpufleetError(
            f"cluster {spec.name!r} is only partly up (a namespace or an sshd is gone): run gpufleet "
            "down, then gpufleet up"
        )
    if any(char in str(folder) for char in ",:\n"):
        raise GpufleetError(
            f"the state folder {folder} contains ',' or ':', which mount options cannot carry: "
            "run gpufleet from a project folder without them"
        )
    controller = controller_address(spec)
    python = os.path.abspath(sys.executable)
    preflight_tools.check_all(spec, controller, python)
    _check_namespaces_free(spec, folder)
    system = tuple(Path(f"/etc/{name}").read_text() for name in ("passwd", "group", "shadow"))
    try:
        account = choose_account(spec.ssh.user, system[0], system[1])
    except ValueError as error:
        raise GpufleetError(str(error)) from None
    docker = spec.local.runtime == "docker"
    # Images first: a failed build leaves no cluster behind, and a built one is cached.
    image = images.ensure_image(spec, progress, lock)[0] if docker else None
    record = LocalRecord(
        cluster=spec.name,
        spec_fingerprint=spec_fingerprint(spec),
        namespaces=namespaces_of(spec),
        controller_link=controller_link(spec.name),
        uid=account.uid,
        runtime=spec.local.runtime,
        created_dirs=[] if docker else _mountpoints_to_create(spec),
    )
    build = Build(
        spec=spec,
        folder=folder,
        record=record,
        account=account,
        system=(system[0], system[1], system[2]),
        controller=controller,
        python=python,
        progress=progress,
        login_timeout=max(login_timeout, DOCKER_LOGIN_TIMEOUT_S) if docker else login_timeout,
        image=image,
    )
    try:
        build.save()
        run_steps(build, DOCKER_STEPS if docker else PROCESS_STEPS)
        return load_inventory(folder)
    except BaseException:
        progress("failed: rolling back")
        # Namespaces this `up` created may not carry their marker yet (a failure between
        # creating and configuring them): the record's names are adopted when unmarked.
        teardown(record, folder, adopt=set(record.namespaces))
        raise


def _check_namespaces_free(spec: ClusterSpec, folder: Path) -> None:
    owners = netns.namespace_owners(namespaces_of(spec))
    foreign = {ns: owner for ns, owner in owners.items() if owner and owner != spec.name}
    if foreign:
        ns, owner = next(iter(foreign.items()))
        raise GpufleetError(
            f"cluster {spec.name!r}: the namespace {ns} it needs belongs to cluster {owner!r} (the "
            "names gpufleet-<cluster>-<host> of the two clusters collide): take that cluster down, "
            "or rename this cluster or its host"
        )
    unmarked = [ns for ns, owner in owners.items() if not owner]
    if unmarked:
        raise GpufleetError(
            f"cluster {spec.name!r}: {', '.join(unmarked)} already exist(s) without a gpufleet owner "
            "marker (not made by gpufleet up for this cluster): if nothing uses it, remove it with "
            "ip netns del NAME"
        )
    leftovers = list(owners)
    if netns.link_exists(controller_link(spec.name)):
        leftovers.append(f"link {controller_link(spec.name)}")
    if leftovers or folder.exists():
        raise GpufleetError(
            f"cluster {spec.name!r}: {', '.join(leftovers) or str(folder)} already exist(s) but no "
            "cluster was recorded: if they are this cluster's leftovers, run gpufleet down first"
        )


def _mountpoints_to_create(spec: ClusterSpec) -> list[str]:
    """The process runtime bind-mounts shares over folders that must exist on the machine."""
    return list(
        dict.fromkeys(
            d
            for share in spec.nas
            if hostproc.machine_mountpoint(share.mount)
            for d in hostproc.missing_dirs(share.mount)
        )
    )


def cluster_down(
    spec: ClusterSpec, project_root: Path, progress: Progress = _quiet, purge: bool = False
) -> None:
    """Remove everything of the cluster but the image cache and the NAS data; a cluster that is
    not up is not an error. ``purge`` removes the NAS data too (the user's checkpoints and logs)."""
    preflight_tools.check_provisioner(spec, "down")
    folder = state_dir(project_root, spec.name)
    record = read_record(folder)
    fallback = LocalRecord(
        cluster=spec.name,
        spec_fingerprint="",
        namespaces=namespaces_of(spec),
        controller_link=controller_link(spec.name),
        uid=-1,
    )
    # An unmarked namespace is this cluster's only if `up` recorded it (it failed before
    # marking it); a name the spec alone gives may be another cluster's (names collide).
    adopt = set(record.namespaces) if record is not None else set()
    if record is None:
        record = fallback
    else:
        # The recorded names plus the spec's (the spec may have changed since up).
        extra = [ns for ns in fallback.namespaces if ns not in record.namespaces]
        record = record.model_copy(update={"namespaces": extra + record.namespaces})
    present = [ns for ns in record.namespaces if netns.namespace_exists(ns)]
    nas = hostproc.nas_root(folder)
    if not present and not netns.link_exists(record.controller_link) and not _exists(folder):
        if purge and _exists(nas):
            preflight_tools.check_root()
            progress(f"cluster {spec.name!r} is not up; removing its NAS data ({nas})")
            hostproc.remove_tree(nas)
            return
        progress(f"cluster {spec.name!r} is not up; nothing to do")
        return
    preflight_tools.check_root()
    progress(f"removing cluster {spec.name!r}" + (f" and its NAS data ({nas})" if purge else ""))
    with _project_lock(project_root):
        teardown(record, folder, adopt, purge=purge)


def _exists(path: Path) -> bool:
    """Path.exists, but a folder hidden from a non-root user counts as there (root is needed)."""
    try:
        return path.exists()
    except PermissionError:
        return True
