"""The firewall plan: peers exactly the declared hosts, SSH only from admins."""

from __future__ import annotations

import ipaddress

from gpufleet.derive.firewall import firewall_plan
from gpufleet.spec import parse_spec
from tests.spec.test_models import mutated, valid_spec


def expand(elements: tuple[str, ...]) -> set[str]:
    """Every address an nft set element list covers ('a/len', 'a-b' or 'a')."""
    covered: set[str] = set()
    for element in elements:
        if "-" in element:
            first, last = (ipaddress.ip_address(x) for x in element.split("-"))
            covered |= {str(first + i) for i in range(int(last) - int(first) + 1)}
        else:
            covered |= {str(a) for a in ipaddress.ip_network(element)}
    return covered


def test_peers_are_exactly_the_host_addresses() -> None:
    data = valid_spec()
    data["network"]["cluster_cidr"] = "10.10.0.0/16"
    data["hosts"] = [
        {"name": f"h{i}", "address": f"10.10.{i // 200}.{i % 200 + 1}", "gpus": 0} for i in range(300)
    ]
    data["hosts"].append({"name": "far", "address": "10.10.9.9", "gpus": 0})
    plan = firewall_plan(parse_spec(data))
    assert expand(plan.peers_v4) == {h["address"] for h in data["hosts"]}
    assert plan.peers_v4 == ("10.10.0.1-10.10.0.200", "10.10.1.1-10.10.1.100", "10.10.9.9")


def test_not_the_whole_cluster_cidr() -> None:
    plan = firewall_plan(parse_spec(valid_spec()))
    assert "10.10.0.0/24" not in plan.peers_v4
    assert expand(plan.peers_v4) == {"10.10.0.11", "10.10.0.12"}


def test_ssh_ports_are_host_and_container() -> None:
    plan = firewall_plan(parse_spec(mutated("ssh.port", 2200)))
    assert plan.ssh_ports == (22, 2200)


def test_admin_networks_split_by_family() -> None:
    plan = firewall_plan(parse_spec(mutated("ssh.admin_cidrs", ["10.20.0.0/24", "fd00:1::/64"])))
    assert plan.admin_v4 == ("10.20.0.0/24",)
    assert plan.admin_v6 == ("fd00:1::/64",)
    assert plan.peers_v6 == ()
