"""The LAN plan: ip -batch lines (pure)."""

from __future__ import annotations

from gpufleet.local.names import MAX_IFNAME, controller_address, controller_link, lan_namespace, marker_owner
from gpufleet.local.netns import lan_plan, teardown_lines
from tests.conftest import stack_spec


def test_plan_creates_every_namespace_first() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    assert plan.root_create[:3] == [
        "netns add gpufleet-local-lan",
        "netns add gpufleet-local-node-0",
        "netns add gpufleet-local-node-1",
    ]


def test_bridge_lives_in_the_lan_namespace_not_root() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    bridges = [line for line in plan.root_create if "type bridge" in line]
    assert bridges == ["link add br0 netns gpufleet-local-lan type bridge"]


def test_hosts_get_their_address_on_their_ifname() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    assert plan.per_namespace["gpufleet-local-node-1"] == [
        "link set lo alias gpufleet-cluster=local",
        "link set lo up",
        "addr add 10.77.0.12/24 dev eth0",
        "link set eth0 up",
    ]
    assert "link add eth0 netns gpufleet-local-node-1 type veth" in " ".join(plan.root_create)


def test_controller_joins_with_its_address() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    link = controller_link("local")
    assert plan.root_configure == [f"addr add 10.77.0.1/24 dev {link}", f"link set {link} up"]


def test_every_created_link_name_fits() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    for line in plan.root_create:
        words = line.split()
        if words[:2] == ["link", "add"]:
            assert len(words[2]) <= MAX_IFNAME
            if "peer" in words:
                assert len(words[words.index("name") + 1]) <= MAX_IFNAME


def test_teardown_deletes_the_root_link_and_namespaces() -> None:
    assert teardown_lines(["gpufleet-c-node-0", lan_namespace("c")], "gfcabc") == [
        "link del gfcabc",
        "netns del gpufleet-c-node-0",
        "netns del gpufleet-c-lan",
    ]
    assert teardown_lines([], None) == []


def test_every_namespace_is_marked_with_its_cluster_first() -> None:
    spec = stack_spec("local")
    plan = lan_plan(spec, controller_address(spec))
    assert set(plan.per_namespace) == {"gpufleet-local-lan", "gpufleet-local-node-0", "gpufleet-local-node-1"}
    for lines in plan.per_namespace.values():
        assert lines[0] == "link set lo alias gpufleet-cluster=local"
    assert marker_owner("gpufleet-cluster=local") == "local"
    assert marker_owner("something else") is None
