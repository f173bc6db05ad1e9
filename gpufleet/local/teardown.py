"""Undo what a record names: the one rollback of a failed `up`, and all of `down`.

Order matters: Docker daemons first (they stop their containers and unmount
what they mounted), then every process left in the cluster's namespaces, then
the namespaces and the controller's link, then the machine folders `up` made
and the state folder. What stays: the image cache (the daemons' data-roots),
and the NAS stand-ins unless ``purge``.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpufleet.local import docker_hosts, dockerd, hostproc, netns
from gpufleet.local.names import host_namespace
from gpufleet.local.record import LocalRecord


def owned_namespaces(record: LocalRecord, adopt: set[str]) -> list[str]:
    """The record's namespaces marked as this cluster's, or unmarked and adopted (made by a failed up)."""
    owners = netns.namespace_owners(record.namespaces)
    return [
        ns
        for ns in record.namespaces
        if owners.get(ns) == record.cluster or (owners.get(ns) == "" and ns in adopt)
    ]


def teardown(record: LocalRecord, folder: Path, adopt: set[str], purge: bool = False) -> None:
    owned = owned_namespaces(record, adopt)
    daemons = [
        dockerd.DaemonPaths(data_root=Path(d.data_root), run_dir=Path(d.run_dir))
        for d in record.daemons.values()
    ]
    if daemons:
        docker_hosts.stop_daemons(daemons)
    _kill_processes(record, owned)
    netns.teardown(owned, record.controller_link)
    for paths in daemons:
        docker_hosts.remove_run_dir(paths)
    for daemon in record.daemons.values():
        docker_hosts.remove_cgroups(daemon.cgroup_parent)
    others = [ns for ns in netns.gpufleet_namespaces() if ns not in owned]
    hostproc.remove_created_dirs(record.created_dirs, other_clusters=bool(others))
    hostproc.remove_tree(folder)
    if purge:
        hostproc.remove_tree(hostproc.nas_root(folder))


def _kill_processes(record: LocalRecord, owned: list[str]) -> None:
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
