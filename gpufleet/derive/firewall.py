"""Host firewall plan: default-drop input, SSH from admins, everything from peers.

NCCL and gloo pick random ports (NVIDIA/nccl#388), so peers are allowed by
address, not by port. The rules live in their own ``inet gpufleet`` table so
Docker's tables and the host's other rules are never touched.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gpufleet.spec.models import ClusterSpec

TABLE_FAMILY = "inet"
TABLE_NAME = "gpufleet"
PING_RATE = "5/second"


@dataclass(frozen=True)
class FirewallPlan:
    """What the nftables table of every host of a cluster allows."""

    ssh_ports: tuple[int, ...]
    admin_v4: tuple[str, ...]
    admin_v6: tuple[str, ...]
    peers_v4: tuple[str, ...]
    peers_v6: tuple[str, ...]


def _collapsed(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], version: int
) -> tuple[str, ...]:
    same_family = [n for n in networks if n.version == version]
    return tuple(str(n) for n in ipaddress.collapse_addresses(same_family))  # type: ignore[type-var]


def _address_ranges(addresses: list[str], version: int) -> tuple[str, ...]:
    """Exact address set as nft interval elements: 'a' or 'a-b' per contiguous run.

    Contiguous host addresses (the usual case) become one element, so a host's
    ruleset does not grow with the cluster; the set still holds no address
    that is not a declared host.
    """
    numbers = sorted({int(a) for a in map(ipaddress.ip_address, addresses) if a.version == version})
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    ranges: list[str] = []
    run_start = previous = None
    for number in [*numbers, None]:
        if previous is not None and number == previous + 1:
            previous = number
            continue
        if run_start is not None and previous is not None:
            first, last = make(run_start), make(previous)
            ranges.append(str(first) if first == last else f"{first}-{last}")
        run_start = previous = number
    return tuple(ranges)


def firewall_plan(spec: ClusterSpec) -> FirewallPlan:
    """The same plan applies to every host: peers are all declared host addresses."""
    admins = [ipaddress.ip_network(c) for c in spec.ssh.admin_cidrs]
    addresses = [h.address for h in spec.hosts]
    return FirewallPlan(
        ssh_ports=tuple(sorted({spec.ssh.host_port, spec.ssh.port})),
        admin_v4=_collapsed(admins, 4),
        admin_v6=_collapsed(admins, 6),
        peers_v4=_address_ranges(addresses, 4),
        peers_v6=_address_ranges(addresses, 6),
    )
