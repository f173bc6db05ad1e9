"""NCCL environment per host: from the spec alone, or from the spec plus probed facts.

Without facts: the host's declared interface and HCAs. With facts (``gpufleet
probe``): the interface that really carries the host's cluster address, the
ACTIVE ports of the fabric, the RoCE v2 GID, GPUDirect RDMA only when
nvidia_peermem is loaded. The spec's ``nccl`` overrides win either way;
overrides that the facts contradict are reported as warnings.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field

from gpufleet.errors import InputError
from gpufleet.facts import HcaPort, HostFacts
from gpufleet.spec.models import ClusterSpec, HostSpec

# NCCL matches SOCKET_IFNAME entries as prefixes; '^' excludes. Without '=',
# 'eth1' would also match 'eth10' (nccl-tests#9), hence '=' for exact names.
EXCLUDED_IFNAME_PREFIXES = ("lo", "docker", "veth", "virbr")
DEFAULT_DEBUG = "WARN"
# NCCL 2.21 picks the RoCE v2 GID itself and follows it when the table changes
# (NVIDIA/nccl#1333); older versions default to index 0, a RoCE v1 GID.
NCCL_AUTO_GID = (2, 21)
INFINIBAND, ETHERNET = "InfiniBand", "Ethernet"


@dataclass(frozen=True)
class NcclEnv:
    """The env for one host, plus comment lines for nccl.env and warnings for the user."""

    env: dict[str, str]
    comments: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    fabric: str | None = None  # what the facts resolved (infiniband/roce/ethernet); None: spec-only


def socket_ifname(host: HostSpec) -> str:
    if host.ifname:
        return f"={host.ifname}"
    return "^" + ",".join(EXCLUDED_IFNAME_PREFIXES)


def nccl_env(spec: ClusterSpec, host: HostSpec, facts: HostFacts | None = None) -> NcclEnv:
    """NCCL env for ``host``: spec-only when ``facts`` is None, else derived from the facts.

    Raises InputError when the facts contradict an explicit ``network.fabric``.
    """
    if facts is not None:
        return _facts_env(spec, host, facts)
    env: dict[str, str] = {"NCCL_SOCKET_IFNAME": socket_ifname(host)}
    comments = [f"gpufleet: NCCL settings for host {host.name} (fabric: {spec.network.fabric})"]
    if host.ifname:
        # gloo (CPU ranks, and torch's own store traffic) takes an exact name only.
        env["GLOO_SOCKET_IFNAME"] = host.ifname
    reserved = spec.network.reserved_hcas
    if spec.network.fabric == "ethernet":
        env["NCCL_IB_DISABLE"] = "1"
    elif host.hcas:
        env["NCCL_IB_HCA"] = "=" + ",".join(h for h in host.hcas if h not in reserved)
    elif reserved:
        # Unknown compute HCAs: let NCCL pick, but never a storage/management one ('^=': exact names).
        env["NCCL_IB_HCA"] = "^=" + ",".join(reserved)
    if spec.network.is_rdma:
        _qos(spec, env)
    env["NCCL_DEBUG"] = DEFAULT_DEBUG
    if spec.nccl:
        comments.append("user overrides from the spec's nccl section follow the derived values")
    env.update(spec.nccl)
    return NcclEnv(env=env, comments=tuple(comments))


def _qos(spec: ClusterSpec, env: dict[str, str]) -> None:
    # Traffic class / service level come from the fabric team, never from facts.
    if spec.network.ib_traffic_class is not None:
        env["NCCL_IB_TC"] = str(spec.network.ib_traffic_class)
    if spec.network.ib_service_level is not None:
        env["NCCL_IB_SL"] = str(spec.network.ib_service_level)


# --- pieces shared with gpufleet lint ---------------------------------------------------


def _matches(port: HcaPort, names: list[str]) -> bool:
    return port.name in names or port.device.name in names


def usable_ports(spec: ClusterSpec, host: HostSpec, facts: HostFacts, link_layer: str) -> list[HcaPort]:
    """ACTIVE ports of ``link_layer``, minus reserved HCAs, limited to ``host.hcas`` when declared.

    RoCE ports also need a RoCE v2 GID: without one NCCL cannot route over them.
    """
    ports = [p for p in facts.hca_ports(link_layer) if not _matches(p, spec.network.reserved_hcas)]
    if host.hcas:
        ports = [p for p in ports if _matches(p, host.hcas)]
    if link_layer == ETHERNET:
        ports = [p for p in ports if any(g.is_roce_v2 for g in p.port.gids)]
    # Sorted, so the same facts give the same env whatever order they were listed in.
    return sorted(ports, key=lambda p: _natural(p.name))


def _natural(name: str) -> list[tuple[int, str]]:
    # mlx5_2:1 before mlx5_10:1
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


def is_virtual_ifname(name: str) -> bool:
    return name.startswith(EXCLUDED_IFNAME_PREFIXES)


def ifname_entries(value: str) -> tuple[str, list[str]]:
    """NCCL_SOCKET_IFNAME -> (mode, names): mode '^' excludes, '=' exact, '' prefix match."""
    mode = value[:1] if value[:1] in ("^", "=") else ""
    return mode, [name for name in value[len(mode) :].split(",") if name]


def ifname_problem(value: str, facts: HostFacts) -> str | None:
    """Why NCCL_SOCKET_IFNAME ``value`` cannot work on this host, or None."""
    mode, names = ifname_entries(value)
    if mode == "^":
        return None
    bad = [name for name in names if is_virtual_ifname(name)]
    if bad:
        return f"NCCL_SOCKET_IFNAME={value} selects {', '.join(bad)}, a loopback or virtual interface"
    present = [i.name for i in facts.interfaces]
    found = [n for n in names if (n in present if mode == "=" else any(p.startswith(n) for p in present))]
    if not found:
        return f"NCCL_SOCKET_IFNAME={value}: no such interface on this host (it has {', '.join(present)})"
    return None


def hca_problem(value: str, facts: HostFacts) -> str | None:
    """Why NCCL_IB_HCA ``value`` names ports that are not ACTIVE here, or None."""
    mode, names = ifname_entries(value)
    if mode == "^":
        return None
    active = facts.hca_ports()
    missing = []
    for name in names:
        device, _, port = name.partition(":")
        hits = [
            p
            for p in active
            if (p.device.name == device if mode == "=" else p.device.name.startswith(device))
            and (not port or str(p.port.port) == port)
        ]
        if not hits:
            missing.append(name)
    if missing:
        return f"NCCL_IB_HCA={value}: {', '.join(missing)} is not an ACTIVE port on this host"
    return None


def gid_problem(index: int, ports: list[HcaPort]) -> str | None:
    """Why GID ``index`` is wrong for NCCL on these RoCE ports, or None."""
    for port in ports:
        gid = port.port.gid(index)
        if gid is None:
            return f"GID index {index} is empty on {port.name}"
        if not gid.is_roce_v2:
            return f"GID index {index} on {port.name} is a {gid.type} GID, not RoCE v2"
        if gid.is_link_local:
            return f"GID index {index} on {port.name} is link-local ({gid.gid}): not routable"
    return None


def cluster_gid_index(spec: ClusterSpec, ports: list[HcaPort]) -> tuple[int | None, list[str]]:
    """The RoCE v2 GID index whose address lies in the cluster network (else any routable
    IPv4 RoCE v2 GID), agreed across ports; warnings when the ports disagree."""
    cidr = ipaddress.ip_network(spec.network.cluster_cidr)
    warnings: list[str] = []
    chosen: dict[str, int] = {}
    for port in ports:
        v2 = sorted(
            (g for g in port.port.gids if g.is_roce_v2 and not g.is_link_local), key=lambda g: g.index
        )
        in_cluster = [g for g in v2 if g.ip.version == cidr.version and g.ip in cidr]
        candidates = in_cluster or [g for g in v2 if g.ip.version == 4] or v2
        pick = candidates[0] if candidates else None
        if pick is None:
            warnings.append(f"{port.name} has no routable RoCE v2 GID")
        else:
            chosen[port.name] = pick.index
    if not chosen:
        return None, warnings
    index, _ = Counter(chosen.values()).most_common(1)[0]
    odd = sorted(name for name, i in chosen.items() if i != index)
    if odd:
        warnings.append(f"the RoCE v2 GID is at index {index} except on {', '.join(odd)}; pinned {index}")
    return index, warnings


# --- the facts-based derivation ---------------------------------------------------------


def _socket(host: HostSpec, facts: HostFacts, warnings: list[str]) -> str | None:
    carriers = [i for i in facts.interfaces if i.has_address(host.address)]
    carrier = min(carriers, key=lambda i: (bool(i.virtual), i.name)) if carriers else None
    if carrier is not None:
        if host.ifname and host.ifname != carrier.name:
            warnings.append(
                f"the spec gives ifname {host.ifname} but {host.address} is on {carrier.name}; "
                f"using {carrier.name} (fix ifname in the spec)"
            )
        return carrier.name
    if host.ifname and facts.interface(host.ifname):
        warnings.append(f"no interface carries {host.address}; using the declared ifname {host.ifname}")
        return host.ifname
    warnings.append(
        f"no interface carries {host.address}: NCCL_SOCKET_IFNAME excludes "
        f"{','.join(EXCLUDED_IFNAME_PREFIXES)} instead; check the host's address"
    )
    return None


def _resolve_fabric(
    spec: ClusterSpec, host: HostSpec, ib: list[HcaPort], roce: list[HcaPort], facts: HostFacts
) -> str:
    declared = spec.network.fabric
    if declared == "infiniband" and not ib:
        raise InputError(
            f"host {host.name}: network.fabric is infiniband but the facts show no ACTIVE InfiniBand "
            f"port NCCL may use ({_port_summary(facts)}); fix the links, or set network.fabric"
        )
    if declared == "roce" and not roce:
        raise InputError(
            f"host {host.name}: network.fabric is roce but the facts show no ACTIVE Ethernet RDMA port "
            f"with a RoCE v2 GID ({_port_summary(facts)}); fix the links, or set network.fabric"
        )
    if declared != "auto":
        return declared
    return "infiniband" if ib else ("roce" if roce else "ethernet")


def _port_summary(facts: HostFacts) -> str:
    ports = facts.hca_ports(active_only=False)
    if not ports:
        return "no RDMA devices"
    return ", ".join(f"{p.name} {p.port.link_layer} {p.port.state}" for p in ports)


def _override_warnings(spec: ClusterSpec, facts: HostFacts, rdma: list[HcaPort]) -> list[str]:
    found = []
    overrides = spec.nccl
    if overrides.get("NCCL_IB_DISABLE") == "1" and rdma:
        found.append(
            f"override NCCL_IB_DISABLE=1 turns off {len(rdma)} ACTIVE RDMA port(s): NCCL uses TCP sockets"
        )
    checks = {"NCCL_SOCKET_IFNAME": ifname_problem, "NCCL_IB_HCA": hca_problem}
    for key, check in checks.items():
        problem = check(overrides[key], facts) if key in overrides else None
        if problem:
            found.append(f"override {problem}")
    if "NCCL_IB_GID_INDEX" in overrides and rdma:
        try:
            problem = gid_problem(int(overrides["NCCL_IB_GID_INDEX"]), rdma)
        except ValueError:
            problem = f"NCCL_IB_GID_INDEX={overrides['NCCL_IB_GID_INDEX']} is not a number"
        if problem:
            found.append(f"override NCCL_IB_GID_INDEX: {problem}")
    return found


def _facts_env(spec: ClusterSpec, host: HostSpec, facts: HostFacts) -> NcclEnv:
    warnings: list[str] = []
    ifname = _socket(host, facts, warnings)
    ib = usable_ports(spec, host, facts, INFINIBAND)
    roce = usable_ports(spec, host, facts, ETHERNET)
    fabric = _resolve_fabric(spec, host, ib, roce, facts)
    comments = [f"gpufleet: NCCL settings for host {host.name} from probed facts (fabric: {fabric})"]
    ports = {"infiniband": ib, "roce": roce}.get(fabric, [])
    for declared in host.hcas:
        if not any(_matches(p, [declared]) for p in ports):
            warnings.append(f"declared HCA {declared} is not an ACTIVE {fabric} port here; left out")

    env: dict[str, str] = {}
    if ifname:
        env["NCCL_SOCKET_IFNAME"] = f"={ifname}"
        env["GLOO_SOCKET_IFNAME"] = ifname
    else:
        env["NCCL_SOCKET_IFNAME"] = "^" + ",".join(EXCLUDED_IFNAME_PREFIXES)
    if not ports:
        env["NCCL_IB_DISABLE"] = "1"
        comments.append("no RDMA port in use: NCCL runs over TCP sockets")
    else:
        env["NCCL_IB_HCA"] = "=" + ",".join(p.name for p in ports)
        comments.append(f"{len(ports)} ACTIVE {fabric} port(s) at {_rates(ports)}")
    if fabric == "roce" and ports:
        index, gid_warnings = cluster_gid_index(spec, ports)
        warnings += gid_warnings
        version = facts.nccl_version
        shown = ".".join(map(str, version)) if version else "unknown"
        if index is not None and (version is None or version < NCCL_AUTO_GID):
            env["NCCL_IB_GID_INDEX"] = str(index)
            comments.append(f"RoCE v2 GID index {index} pinned: NCCL {shown} does not select it itself")
        elif index is not None:
            comments.append(f"RoCE v2 GID index {index} not pinned: NCCL {shown} selects it itself")
    if ports:
        _qos(spec, env)
        # GPUDirect RDMA needs no variable: NCCL uses it by itself where the GPU and NIC
        # share a PCIe switch. Forcing NCCL_NET_GDR_LEVEL (e.g. PHB) would also push it
        # through the CPU's host bridge, which is often slower; that stays a user override.
        if facts.gpudirect_module and (facts.gpus or host.gpus):
            comments.append(f"GPUDirect RDMA available: {facts.gpudirect_module} is loaded")
        elif facts.gpus or host.gpus:
            comments.append(
                "GPUDirect RDMA unavailable unless DMA-BUF provides it: nvidia_peermem is not loaded"
            )
    env["NCCL_DEBUG"] = DEFAULT_DEBUG
    override_warnings = _override_warnings(spec, facts, ports)
    warnings += override_warnings
    if spec.nccl:
        comments.append("user overrides from the spec's nccl section follow the derived values")
    env.update(spec.nccl)
    comments += [f"warning: {w}" for w in warnings]
    return NcclEnv(env=env, comments=tuple(comments), warnings=tuple(warnings), fabric=fabric)


def _rates(ports: list[HcaPort]) -> str:
    rates = sorted({p.port.rate or "unknown rate" for p in ports})
    return ", ".join(rates)
