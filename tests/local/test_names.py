"""Namespace, link and controller-address naming (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.local.names import (
    MAX_IFNAME,
    check_names,
    controller_address,
    controller_lan_port,
    controller_link,
    host_namespace,
    lan_namespace,
    lan_port,
)
from gpufleet.spec import parse_spec
from tests.conftest import stack_spec
from tests.local.cluster import cluster_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V test"


def _config(**ssh_network: Any) -> Any:
    config = cluster_config("names", 90, hosts=3, nproc=1, nas=False, user_key=KEY)
    config["ssh"].update(ssh_network.get("ssh", {}))
    config["network"].update(ssh_network.get("network", {}))
    return config


def test_host_and_lan_namespaces_follow_the_contract() -> None:
    assert host_namespace("local", "node-0") == "gpufleet-local-node-0"
    assert lan_namespace("local") == "gpufleet-local-lan"


def test_link_names_fit_ifnamsiz_and_are_unique() -> None:
    clusters = ["a1", "local", "x" * 24]
    hosts = ["node-0", "node-1", "h" * 63]
    names = [lan_port(c, h) for c in clusters for h in hosts]
    names += [controller_link(c) for c in clusters] + [controller_lan_port(c) for c in clusters]
    assert all(len(name) <= MAX_IFNAME for name in names)
    assert len(set(names)) == len(names)


def test_link_names_are_stable() -> None:
    assert controller_link("local") == controller_link("local")
    assert controller_link("local") != controller_link("local2")


def test_local_stack_controller_is_10_77_0_1() -> None:
    controller = controller_address(stack_spec("local"))
    assert (controller.address, controller.interface) == ("10.77.0.1", "10.77.0.1/24")


@pytest.mark.parametrize(
    ("admin_cidrs", "expected"),
    [
        pytest.param(["10.90.0.1/32"], "10.90.0.1", id="single-admin-address"),
        pytest.param(["192.168.0.0/16", "10.90.0.7/32"], "10.90.0.7", id="skips-admin-net-outside-cluster"),
        pytest.param(["10.90.0.0/24"], "10.90.0.1", id="admin-is-the-cluster-net"),
        pytest.param(["10.90.0.8/29"], "10.90.0.8", id="admin-subnet-inside-cluster"),
        pytest.param(["10.0.0.0/8"], "10.90.0.1", id="admin-wider-than-cluster"),
    ],
)
def test_controller_address(admin_cidrs: list[str], expected: str) -> None:
    spec = parse_spec(_config(ssh={"admin_cidrs": admin_cidrs}))
    assert controller_address(spec).address == expected


def test_controller_skips_host_addresses() -> None:
    config = _config(ssh={"admin_cidrs": ["10.90.0.8/29"]})
    config["hosts"][0]["address"] = "10.90.0.8"
    config["hosts"][1]["address"] = "10.90.0.9"
    assert controller_address(parse_spec(config)).address == "10.90.0.10"


@pytest.mark.parametrize(
    "admin_cidrs",
    [
        pytest.param(["192.168.1.0/24"], id="admin-outside-cluster"),
        pytest.param(["10.90.0.11/32"], id="admin-is-a-host"),
    ],
)
def test_no_controller_address_is_a_clear_error(admin_cidrs: list[str]) -> None:
    spec = parse_spec(_config(ssh={"admin_cidrs": admin_cidrs}))
    with pytest.raises(GpufleetError, match=r"admin_cidrs must contain a free address inside"):
        controller_address(spec)


def test_a_host_named_lan_is_refused() -> None:
    config = _config()
    config["hosts"][1]["name"] = "lan"
    with pytest.raises(GpufleetError, match="host named 'lan'"):
        check_names(parse_spec(config))
