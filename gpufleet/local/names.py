"""Names and addresses of a local cluster's namespaces and links (pure).

Every namespace is ``gpufleet-<cluster>-<something>``; a host's is exactly
``gpufleet-<cluster>-<host>``. Link names are at most 15 characters (IFNAMSIZ),
so they are derived from a hash: stable across runs and unique per cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from gpufleet.errors import GpufleetError
from gpufleet.spec.models import ClusterSpec

NAMESPACE_PREFIX = "gpufleet"
LAN_SUFFIX = "lan"
BRIDGE = "br0"
MAX_IFNAME = 15
OWNER_PREFIX = "gpufleet-cluster="
"""Each namespace's ``lo`` carries the alias ``gpufleet-cluster=<cluster>``: names alone can
collide across clusters (``train``/``gpu-0`` and ``train-gpu``/``0``), the marker cannot."""


def host_namespace(cluster: str, host: str) -> str:
    return f"{NAMESPACE_PREFIX}-{cluster}-{host}"


def lan_namespace(cluster: str) -> str:
    """The "switch": the bridge lives here, not in the root namespace (br_netfilter)."""
    return f"{NAMESPACE_PREFIX}-{cluster}-{LAN_SUFFIX}"


def owner_marker(cluster: str) -> str:
    return f"{OWNER_PREFIX}{cluster}"


def marker_owner(alias: str) -> str | None:
    """The cluster a ``lo`` alias names; None when it is no gpufleet marker."""
    return alias[len(OWNER_PREFIX) :] if alias.startswith(OWNER_PREFIX) else None


def _short(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def lan_port(cluster: str, host: str) -> str:
    """The bridge-side end of a host's veth (inside the LAN namespace)."""
    return f"gf{_short(f'{cluster}/{host}')}"


def controller_link(cluster: str) -> str:
    """The controller's end of its veth, in the root namespace: unique per cluster."""
    return f"gfc{_short(f'{cluster}//controller')}"


def controller_lan_port(cluster: str) -> str:
    return f"gfp{_short(f'{cluster}//controller')}"


@dataclass(frozen=True)
class ControllerAddress:
    address: str
    prefixlen: int

    @property
    def interface(self) -> str:
        return f"{self.address}/{self.prefixlen}"


def controller_address(spec: ClusterSpec) -> ControllerAddress:
    """The first usable address inside both an admin CIDR and the cluster network that is no host's."""
    cluster = ipaddress.ip_network(spec.network.cluster_cidr)
    taken = {ipaddress.ip_address(h.address) for h in spec.hosts}
    reserved = {cluster.network_address, cluster.broadcast_address} if cluster.prefixlen < 31 else set()
    for cidr in spec.ssh.admin_cidrs:
        admin = ipaddress.ip_network(cidr)
        if admin.version != cluster.version or not admin.overlaps(cluster):
            continue
        inner = admin if admin.prefixlen >= cluster.prefixlen else cluster
        for candidate in _addresses(inner):
            if candidate in admin and candidate not in taken and candidate not in reserved:
                return ControllerAddress(str(candidate), cluster.prefixlen)
    raise GpufleetError(
        f"cluster {spec.name!r}: no address for the controller: ssh.admin_cidrs must contain a "
        f"free address inside network.cluster_cidr {cluster} (e.g. add {_example(cluster)}/32)"
    )


def _addresses(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    # A handful is plenty: the controller only has to skip the hosts' addresses.
    if network.num_addresses == 1:
        return [network.network_address]
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for address in network:
        out.append(address)
        if len(out) > 4096:
            break
    return out


def _example(cluster: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(cluster.network_address + 1)


def check_names(spec: ClusterSpec) -> None:
    """Refuse specs whose namespace names would clash (a host called 'lan')."""
    for host in spec.hosts:
        if host.name == LAN_SUFFIX:
            raise GpufleetError(
                f"cluster {spec.name!r}: a local cluster cannot have a host named {LAN_SUFFIX!r} "
                f"(its namespace would be the LAN's, {lan_namespace(spec.name)}); rename the host"
            )
