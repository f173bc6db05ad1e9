"""`up` and `down` for ``provisioner: local`` clusters (see gpufleet.local for the contract)."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from gpufleet.derive.nccl import nccl_env
from gpufleet.derive.sshd import authorized_keys
from gpufleet.errors import GpufleetError
from gpufleet.inventory import STATE_DIR, Inventory, InventoryHost, load_inventory, state_dir, write_state
from gpufleet.local import hostproc, logins, netns, preflight_tools
from gpufleet.local.accounts import LoginAccount, choose_account
from gpufleet.local.keys import KeyPair, generate_ed25519
from gpufleet.local.names import (
    check_names,
    controller_address,
    controller_link,
    host_namespace,
    lan_namespace,
)
from gpufleet.local.record import LocalRecord, read_record, spec_fingerprint, write_record
from gpufleet.render import render_cluster
from gpufleet.spec.models import ClusterSpec

Progress = Callable[[str], None]


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
    spec: ClusterSpec, project_root: Path, progress: Progress = _quiet, login_timeout: float = 15.0
) -> Inventory:
    preflight_tools.check_provisioner(spec)
    check_names(spec)
    preflight_tools.check_root()
    with _project_lock(project_root):
        return _up(spec, project_root, progress, login_timeout)


def _up(spec: ClusterSpec, project_root: Path, progress: Progress, login_timeout: float) -> Inventory:
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
    passwd, group, shadow = (Path(f"/etc/{name}").read_text() for name in ("passwd", "group", "shadow"))
    try:
        account = choose_account(spec.ssh.user, passwd, group)
    except ValueError as error:
        raise GpufleetError(str(error)) from None

    record = LocalRecord(
        cluster=spec.name,
        spec_fingerprint=spec_fingerprint(spec),
        namespaces=namespaces_of(spec),
        controller_link=controller_link(spec.name),
        uid=account.uid,
        created_dirs=list(
            dict.fromkeys(
                d
                for share in spec.nas
                if hostproc.machine_mountpoint(share.mount)
                for d in hostproc.missing_dirs(share.mount)
            )
        ),
    )
    try:
        write_record(folder, record)
        progress("generating keys and host files")
        controller_key = generate_ed25519()
        keys = {h.name: generate_ed25519() for h in spec.hosts}
        _write_files(spec, folder, account, (passwd, group, shadow), controller_key, keys)
        progress(f"building the LAN ({len(spec.hosts)} hosts + controller {controller.address})")
        netns.apply(netns.lan_plan(spec, controller))
        progress("starting sshd on every host")
        for host in spec.hosts:
            paths = hostproc.host_paths(folder, host.name)
            script = hostproc.start_script(spec, host, paths, folder)
            namespace = host_namespace(spec.name, host.name)
            record.pids[host.name] = hostproc.start_host(namespace, script, paths.log)
        write_record(folder, record)
        inventory = _inventory(spec, keys, python)
        progress("verifying key logins")
        pids = dict(record.pids)
        try:
            logins.verify_all(
                inventory.hosts,
                controller_key.private_openssh,
                alive=lambda name: not hostproc.host_exited(pids[name]),
                timeout=login_timeout,
            )
        except GpufleetError as error:
            raise GpufleetError(f"{error}{_log_tails(folder, spec)}") from None
        write_state(folder, inventory, controller_key.private_openssh)
        return inventory
    except BaseException:
        progress("failed: rolling back")
        # Namespaces this `up` created may not carry their marker yet (a failure between
        # creating and configuring them): the record's names are adopted when unmarked.
        _teardown(record, folder, adopt=set(record.namespaces))
        raise


def _write_files(
    spec: ClusterSpec,
    folder: Path,
    account: LoginAccount,
    system: tuple[str, str, str],
    controller_key: KeyPair,
    keys: dict[str, KeyPair],
) -> None:
    """The NAS stand-ins and every host's folder, from the RENDERED files."""
    tree = render_cluster(spec)
    keys_file = authorized_keys(spec, extra_keys=(controller_key.public_line(f"gpufleet-{spec.name}"),))
    for share in spec.nas:
        source = hostproc.nas_source(folder, share.name)
        source.mkdir(parents=True)
        os.chown(source, account.uid, account.gid)
        os.chmod(source, 0o755)  # noqa: S103 - a share, like an NFS export's root
        os.chmod(folder / hostproc.NAS_DIR, 0o755)  # noqa: S103 - reached only via bind mounts
        if hostproc.machine_mountpoint(share.mount):  # under /home: made in each host's home
            hostproc.ensure_mountpoint(share.mount)
    for host in spec.hosts:
        rendered = {
            name: tree[PurePosixPath("hosts", host.name, name)] for name in ("sshd_config", "nftables.conf")
        }
        rendered["authorized_keys"] = keys_file
        paths = hostproc.host_paths(folder, host.name)
        hostproc.prepare_host(spec, host, paths, rendered, keys[host.name], account, system)


def _inventory(spec: ClusterSpec, keys: dict[str, KeyPair], python: str) -> Inventory:
    """The same format `gpufleet inventory` writes from Pulumi outputs."""
    return Inventory(
        cluster=spec.name,
        provisioner="local",
        hosts=[
            InventoryHost(
                name=h.name,
                address=h.address,
                ssh_address=h.address,
                ssh_port=spec.ssh.port,
                user=spec.ssh.user,
                host_key=keys[h.name].public_openssh,
                python=python,
            )
            for h in spec.hosts
        ],
        image_digest=spec.image.digest,
        nccl_env={h.name: dict(nccl_env(spec, h).env) for h in spec.hosts},
    )


def _log_tails(folder: Path, spec: ClusterSpec) -> str:
    tails = []
    for host in spec.hosts:
        try:
            lines = hostproc.host_paths(folder, host.name).log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            tails.append(f"\n  {host.name} sshd log: " + "\n    ".join(lines[-5:]))
    return "".join(tails)


def cluster_down(spec: ClusterSpec, project_root: Path, progress: Progress = _quiet) -> None:
    """Remove everything of the cluster; a cluster that is not up is not an error."""
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
    if not present and not netns.link_exists(record.controller_link) and not _exists(folder):
        progress(f"cluster {spec.name!r} is not up; nothing to do")
        return
    preflight_tools.check_root()
    progress(f"removing cluster {spec.name!r}")
    with _project_lock(project_root):
        _teardown(record, folder, adopt)


def _exists(path: Path) -> bool:
    """Path.exists, but a folder hidden from a non-root user counts as there (root is needed)."""
    try:
        return path.exists()
    except PermissionError:
        return True


def _teardown(record: LocalRecord, folder: Path, adopt: set[str]) -> None:
    """Remove what ``record`` names, but only namespaces marked as this cluster's (or adopted)."""
    owners = netns.namespace_owners(record.namespaces)
    owned = [
        ns
        for ns in record.namespaces
        if owners.get(ns) == record.cluster or (owners.get(ns) == "" and ns in adopt)
    ]
    inodes = {ns: netns.namespace_inode(ns) for ns in owned}
    for host, pid in record.pids.items():
        hostproc.kill_group(pid, inodes.get(host_namespace(record.cluster, host)))
    wanted = {inode for inode in inodes.values() if inode is not None}
    killed: list[int] = []
    for _ in range(50):  # sessions fork; repeat until the namespaces are empty
        pids = netns.pids_in_namespaces(wanted) if wanted else []
        if not pids:
            break
        hostproc.kill_pids(pids)
        killed += pids
        time.sleep(0.005)
    hostproc.reap_wait(list(record.pids.values()) + killed, timeout=1.0)
    netns.teardown(owned, record.controller_link)
    others = [ns for ns in netns.gpufleet_namespaces() if ns not in owned]
    hostproc.remove_created_dirs(record.created_dirs, other_clusters=bool(others))
    hostproc.remove_tree(folder)
