"""The LAN of a local cluster: namespaces, a bridge in its own namespace, veths.

The plan is pure (lists of ``ip -batch`` lines); applying it costs one ``ip``
process for the root namespace plus one per namespace, run concurrently.
The bridge lives in a "switch" namespace, not in the root one: with
br_netfilter loaded, frames bridged in the root namespace would cross the
machine's own FORWARD chain (Docker sets it to drop).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.errors import GpufleetError
from gpufleet.local.names import (
    BRIDGE,
    ControllerAddress,
    controller_lan_port,
    controller_link,
    host_namespace,
    lan_namespace,
    lan_port,
    marker_owner,
    owner_marker,
)
from gpufleet.spec.models import ClusterSpec

NETNS_DIR = Path("/run/netns")
DEFAULT_IFNAME = "eth0"


@dataclass(frozen=True)
class LanPlan:
    """``ip -batch`` lines: first ``root_create`` alone, then the rest concurrently."""

    root_create: list[str]
    root_configure: list[str]
    per_namespace: dict[str, list[str]] = field(default_factory=dict)


def _addr_flags(address: str) -> str:
    # IPv6 duplicate address detection would hold the address back ~1 s.
    return " nodad" if ipaddress.ip_address(address).version == 6 else ""


def lan_plan(spec: ClusterSpec, controller: ControllerAddress) -> LanPlan:
    cluster = spec.name
    lan = lan_namespace(cluster)
    prefix = ipaddress.ip_network(spec.network.cluster_cidr).prefixlen
    create = [f"netns add {lan}"]
    create += [f"netns add {host_namespace(cluster, h.name)}" for h in spec.hosts]
    create.append(f"link add {BRIDGE} netns {lan} type bridge")
    lan_lines = [f"link set lo alias {owner_marker(cluster)}", f"link set {BRIDGE} up"]
    per_namespace: dict[str, list[str]] = {}
    for host in spec.hosts:
        ns = host_namespace(cluster, host.name)
        ifname = host.ifname or DEFAULT_IFNAME
        port = lan_port(cluster, host.name)
        # Created directly inside the target namespaces: no name clash in the root one.
        create.append(f"link add {ifname} netns {ns} type veth peer name {port} netns {lan}")
        lan_lines += [f"link set {port} master {BRIDGE}", f"link set {port} up"]
        per_namespace[ns] = [
            f"link set lo alias {owner_marker(cluster)}",
            "link set lo up",
            f"addr add {host.address}/{prefix} dev {ifname}{_addr_flags(host.address)}",
            f"link set {ifname} up",
        ]
    ctl, ctl_port = controller_link(cluster), controller_lan_port(cluster)
    create.append(f"link add {ctl} type veth peer name {ctl_port} netns {lan}")
    lan_lines += [f"link set {ctl_port} master {BRIDGE}", f"link set {ctl_port} up"]
    per_namespace[lan] = lan_lines
    root_configure = [
        f"addr add {controller.interface} dev {ctl}{_addr_flags(controller.address)}",
        f"link set {ctl} up",
    ]
    return LanPlan(root_create=create, root_configure=root_configure, per_namespace=per_namespace)


def teardown_lines(namespaces: list[str], link: str | None) -> list[str]:
    """Deleting a namespace takes its links and nft tables with it; the controller's veth is in root."""
    lines = [f"link del {link}"] if link else []
    return lines + [f"netns del {ns}" for ns in namespaces]


def _batch(lines: list[str], namespace: str | None = None, force: bool = False) -> subprocess.Popen[str]:
    argv = ["ip"]
    if namespace:
        argv += ["-n", namespace]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdin is not None
    process.stdin.write("\n".join(lines) + "\n")
    process.stdin.close()
    return process


def _wait(process: subprocess.Popen[str], what: str) -> None:
    assert process.stdout is not None
    output = process.stdout.read()
    if process.wait() != 0:
        raise GpufleetError(f"building the local LAN failed ({what}): {output.strip()}")


def apply(plan: LanPlan) -> None:
    _wait(_batch(plan.root_create), "creating namespaces and links")
    running = [(_batch(plan.root_configure), "controller address")]
    running += [(_batch(lines, ns), ns) for ns, lines in plan.per_namespace.items()]
    for process, what in running:
        _wait(process, what)


def teardown(namespaces: list[str], link: str | None) -> None:
    """Best effort: missing namespaces or links are not errors."""
    present = [ns for ns in namespaces if namespace_exists(ns)]
    lines = teardown_lines(present, link if link and link_exists(link) else None)
    if lines:
        process = _batch(lines, force=True)
        assert process.stdout is not None
        process.stdout.read()
        process.wait()


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def gpufleet_namespaces() -> list[str]:
    """Every network namespace of any gpufleet cluster on this machine."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith("gpufleet-"))
    except OSError:
        return []


def namespace_owners(names: list[str]) -> dict[str, str]:
    """For each namespace that exists: the cluster its ``lo`` marker names, or "" if unmarked.

    One ``ip`` per namespace, run concurrently; a namespace that vanished (or
    cannot be entered) is left out.
    """
    running = []
    for name in names:
        if namespace_exists(name):
            argv = ["ip", "-j", "-n", name, "link", "show", "dev", "lo"]
            running.append(
                (name, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
            )
    owners: dict[str, str] = {}
    for name, process in running:
        output, _ = process.communicate()
        if process.returncode != 0:
            continue
        try:
            alias = json.loads(output)[0].get("ifalias", "")
        except (ValueError, IndexError, AttributeError):
            alias = ""
        owners[name] = marker_owner(alias) or ""
    return owners


def namespace_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def pids_in_namespaces(inodes: set[int]) -> list[int]:
    """What ``ip netns pids`` lists, for several namespaces in one pass over /proc."""
    wanted = {f"net:[{inode}]" for inode in inodes}
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") in wanted:
                pids.append(int(entry))
        except OSError:
            continue  # gone, or a kernel thread
    return pids
