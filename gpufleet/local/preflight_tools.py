"""Checks before `up` builds anything: who runs it, which tools exist, which addresses are free.

Each check raises GpufleetError naming what is missing and how to get it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from gpufleet.errors import GpufleetError
from gpufleet.local.names import ControllerAddress
from gpufleet.spec.models import ClusterSpec

# tool -> the Debian package that ships it
TOOLS = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "nft": "nftables",
    "unshare": "util-linux",
    "mount": "mount",
}
SETUP_HINT = "make setup (runs scripts/install-system-deps.sh)"


_PULUMI_WAY = {
    "up": "stand it up with pulumi up, then run gpufleet inventory",
    "down": "take it down with pulumi destroy",
}


def check_provisioner(spec: ClusterSpec, command: str = "up") -> None:
    if spec.provisioner != "local":
        raise GpufleetError(
            f"cluster {spec.name!r} has provisioner {spec.provisioner!r}: gpufleet {command} only "
            f"handles 'provisioner: local' stacks on this machine; {_PULUMI_WAY[command]}"
        )


def check_root(euid: int | None = None) -> None:
    if (os.geteuid() if euid is None else euid) != 0:
        raise GpufleetError(
            "a local cluster needs root (network namespaces, mounts, nftables, sshd): run it as "
            "root, e.g. sudo .venv/bin/gpufleet up ..."
        )


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    return [tool for tool in TOOLS if which(tool) is None]


def check_tools(which: Callable[[str], str | None] = shutil.which) -> None:
    missing = missing_tools(which)
    if missing:
        packages = sorted({TOOLS[tool] for tool in missing})
        raise GpufleetError(
            f"missing tools for a local cluster: {', '.join(missing)}; install them with "
            f"apt-get install -y {' '.join(packages)} (or {SETUP_HINT})"
        )


def check_ip_netns() -> None:
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GpufleetError(
            f"'ip netns' does not work here ({result.stderr.strip()}): install a recent iproute2 "
            f"(apt-get install -y iproute2) on a kernel with network namespaces"
        )


def address_collisions(spec: ClusterSpec, controller: ControllerAddress, ip_addr_json: str) -> list[str]:
    """Problems with addresses already on this machine (``ip -j addr`` output)."""
    ours = {h.address: f"host {h.name!r}" for h in spec.hosts}
    ours[controller.address] = "the controller"
    cluster = ipaddress.ip_network(spec.network.cluster_cidr)
    problems = []
    for interface in json.loads(ip_addr_json or "[]"):
        name = interface.get("ifname", "?")
        for info in interface.get("addr_info", []):
            local = info.get("local")
            if not local:
                continue
            network = ipaddress.ip_interface(f"{local}/{info.get('prefixlen', 32)}").network
            if local in ours:
                problems.append(
                    f"{local} ({ours[local]}) is already the address of interface {name} on this "
                    "machine: change the host addresses or network.cluster_cidr"
                )
            elif network.version == cluster.version and network.overlaps(cluster) and network.prefixlen > 0:
                problems.append(
                    f"network.cluster_cidr {cluster} overlaps {network} of interface {name} on this "
                    "machine: pick a cluster_cidr that no interface here uses"
                )
    return problems


def check_addresses(spec: ClusterSpec, controller: ControllerAddress) -> None:
    output = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout
    problems = address_collisions(spec, controller, output)
    if problems:
        raise GpufleetError("; ".join(problems))


def untraversable(path: str, stat_fn: Callable[[str], os.stat_result] = os.stat) -> str | None:
    """The first part of ``path`` an unrelated user cannot reach, or None.

    Every parent directory needs o+x and the file o+x, for the path as written
    and for the file a venv's symlink points at.
    """
    for candidate in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        parts = Path(candidate).parents
        for folder in reversed(parts):
            if not stat_fn(str(folder)).st_mode & stat.S_IXOTH:
                return str(folder)
        if not stat_fn(candidate).st_mode & stat.S_IXOTH:
            return candidate
    return None


def check_python(python: str, user: str) -> None:
    blocked = untraversable(python)
    if blocked:
        raise GpufleetError(
            f"the cluster's login user {user!r} cannot execute {python}: {blocked} is not "
            "accessible to other users; build the venv on the system Python in a readable folder "
            "(make setup) or chmod o+x the folders on that path"
        )


def check_all(spec: ClusterSpec, controller: ControllerAddress, python: str) -> None:
    check_root()
    check_tools()
    check_ip_netns()
    check_addresses(spec, controller)
    check_python(python, spec.ssh.user)
