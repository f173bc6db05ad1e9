"""gpufleet/derive/nccl.py: the spec-only env, and the env derived from recorded host facts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.derive.nccl import cluster_gid_index, nccl_env
from gpufleet.errors import GpufleetError
from gpufleet.facts import HostFacts, parse_facts
from tests.conftest import stack_spec
from tests.recorded import facts, raw_facts, spec_with

IB_HCAS = "=" + ",".join(f"mlx5_{i}:1" for i in range(8))

# --- spec only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "host", "expected"),
    [
        pytest.param(
            "example-ib",
            "gpu-0",
            {
                "NCCL_SOCKET_IFNAME": "=ens10f0",
                "GLOO_SOCKET_IFNAME": "ens10f0",
                "NCCL_IB_HCA": "=" + ",".join(f"mlx5_{i}" for i in range(8)),
                "NCCL_DEBUG": "WARN",
                "NCCL_IB_TIMEOUT": "22",
            },
            id="ib",
        ),
        pytest.param(
            "example-roce",
            "roce-a",
            {
                "NCCL_SOCKET_IFNAME": "=enp1s0f0np0",
                "GLOO_SOCKET_IFNAME": "enp1s0f0np0",
                "NCCL_IB_HCA": "=mlx5_0,mlx5_1",
                "NCCL_IB_TC": "106",
                "NCCL_IB_SL": "3",
                "NCCL_DEBUG": "WARN",
            },
            id="roce",
        ),
        pytest.param(
            "example-ethernet",
            "vm-0",
            {
                "NCCL_SOCKET_IFNAME": "=ens5",
                "GLOO_SOCKET_IFNAME": "ens5",
                "NCCL_IB_DISABLE": "1",
                "NCCL_DEBUG": "WARN",
            },
            id="ethernet",
        ),
    ],
)
def test_spec_only_env(stack: str, host: str, expected: dict[str, str]) -> None:
    spec = stack_spec(stack)
    env = nccl_env(spec, spec.host(host))
    assert env.env == expected
    assert env.fabric is None and env.warnings == ()
    assert nccl_env(spec, spec.host(host), None) == env


# --- from facts: the expected env per recorded host ------------------------------------


@pytest.mark.parametrize(
    ("stack", "host", "recorded", "expected"),
    [
        pytest.param(
            "example-ib",
            "gpu-0",
            "dgx-h100-0",
            {
                "NCCL_SOCKET_IFNAME": "=ens10f0",
                "GLOO_SOCKET_IFNAME": "ens10f0",
                "NCCL_IB_HCA": IB_HCAS,
                "NCCL_DEBUG": "WARN",
                "NCCL_IB_TIMEOUT": "22",
            },
            id="ib-8-ndr",
        ),
        pytest.param(
            "example-ib",
            "gpu-2",
            "dgx-h100-port-down",
            {
                "NCCL_SOCKET_IFNAME": "=ens10f0",
                "GLOO_SOCKET_IFNAME": "ens10f0",
                "NCCL_IB_HCA": IB_HCAS.replace("mlx5_3:1,", ""),
                "NCCL_DEBUG": "WARN",
                "NCCL_IB_TIMEOUT": "22",
            },
            id="ib-one-port-down",
        ),
        pytest.param(
            "example-roce",
            "roce-a",
            "roce-a",
            {
                "NCCL_SOCKET_IFNAME": "=enp1s0f0np0",
                "GLOO_SOCKET_IFNAME": "enp1s0f0np0",
                "NCCL_IB_HCA": "=mlx5_0:1,mlx5_1:1",
                "NCCL_IB_GID_INDEX": "3",
                "NCCL_IB_TC": "106",
                "NCCL_IB_SL": "3",
                "NCCL_DEBUG": "WARN",
            },
            id="roce-v2-old-nccl",
        ),
        pytest.param(
            "example-ethernet",
            "vm-0",
            "cloud-vm",
            {
                "NCCL_SOCKET_IFNAME": "=ens5",
                "GLOO_SOCKET_IFNAME": "ens5",
                "NCCL_IB_DISABLE": "1",
                "NCCL_DEBUG": "WARN",
            },
            id="cloud-vm",
        ),
    ],
)
def test_env_from_facts(stack: str, host: str, recorded: str, expected: dict[str, str]) -> None:
    spec = stack_spec(stack)
    assert nccl_env(spec, spec.host(host), facts(recorded)).env == expected


def test_down_port_that_the_spec_declares_is_reported() -> None:
    spec = stack_spec("example-ib")
    env = nccl_env(spec, spec.host("gpu-2"), facts("dgx-h100-port-down"))
    assert env.warnings == ("declared HCA mlx5_3 is not an ACTIVE infiniband port here; left out",)
    assert "warning: declared HCA mlx5_3 is not an ACTIVE infiniband port here; left out" in env.comments


def test_storage_hca_with_ethernet_link_layer_is_never_an_ib_hca() -> None:
    spec = spec_with("example-ib", {"network.reserved_hcas": [], "hosts.0.hcas": []})
    env = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0"))
    assert env.env["NCCL_IB_HCA"] == IB_HCAS


def test_reserved_hcas_are_left_out() -> None:
    no_hcas = {f"hosts.{i}.hcas": [] for i in range(4)}  # a declared HCA may not be reserved too
    spec = spec_with("example-ib", {"network.reserved_hcas": ["mlx5_0", "mlx5_7:1"], **no_hcas})
    env = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0"))
    assert env.env["NCCL_IB_HCA"] == "=" + ",".join(f"mlx5_{i}:1" for i in range(1, 7))


@pytest.mark.parametrize(
    ("torch", "pinned", "comment"),
    [
        pytest.param(
            {"nccl_version": "2.18.6"},
            "3",
            "RoCE v2 GID index 3 pinned: NCCL 2.18.6 does not select",
            id="2.18",
        ),
        pytest.param(
            {"nccl_version": "2.21.5"}, None, "RoCE v2 GID index 3 not pinned: NCCL 2.21.5 selects", id="2.21"
        ),
        pytest.param(None, "3", "RoCE v2 GID index 3 pinned: NCCL unknown does not select", id="unknown"),
    ],
)
def test_roce_gid_index_pinned_only_below_2_21(torch: dict | None, pinned: str | None, comment: str) -> None:
    spec = stack_spec("example-roce")
    env = nccl_env(spec, spec.host("roce-a"), facts("roce-a", torch=torch))
    assert env.env.get("NCCL_IB_GID_INDEX") == pinned
    assert any(line.startswith(comment) for line in env.comments), env.comments


def _roce_facts_with_gid3_moved(port_index: int) -> HostFacts:
    """roce-a with mlx5_1's cluster v2 GID at index 5 instead of 3."""
    raw: dict[str, Any] = raw_facts("roce-a")
    devices = [dict(d) for d in raw["rdma"]]
    port = dict(devices[port_index]["ports"][0])
    gids = [dict(g) for g in port["gids"]]
    gids[3]["index"] = 5
    port["gids"] = gids
    devices[port_index]["ports"] = [port]
    return parse_facts({**raw, "rdma": devices}, "moved")


def test_gid_index_differs_between_ports_warns() -> None:
    spec = stack_spec("example-roce")
    ports = _roce_facts_with_gid3_moved(1).hca_ports("Ethernet")
    index, warnings = cluster_gid_index(spec, ports)
    assert index in (3, 5)
    assert warnings == [
        f"the RoCE v2 GID is at index {index} except on mlx5_{1 if index == 3 else 0}:1; pinned {index}"
    ]


def test_gid_outside_cluster_network_falls_back_to_a_routable_v2_gid() -> None:
    # The rails carry their own subnet; the cluster network is elsewhere.
    spec = spec_with(
        "example-roce",
        {
            "network.cluster_cidr": "10.99.0.0/16",
            "hosts": [{"name": "r", "address": "10.99.0.21", "gpus": 8}],
        },
    )
    index, warnings = cluster_gid_index(spec, facts("roce-a").hca_ports("Ethernet"))
    assert (index, warnings) == (3, [])


@pytest.mark.parametrize(
    ("recorded", "address", "fabric"),
    [
        pytest.param("dgx-h100-0", "10.10.1.10", "infiniband", id="ib"),
        pytest.param("roce-a", "172.16.0.21", "roce", id="roce"),
        pytest.param("cloud-vm", "10.0.0.10", "ethernet", id="vm"),
        pytest.param("workstation-noise", "192.168.1.50", "ethernet", id="workstation"),
    ],
)
def test_auto_fabric_chooses_from_facts(recorded: str, address: str, fabric: str) -> None:
    spec = spec_with(
        "example-ib",
        {
            "network.fabric": "auto",
            "network.cluster_cidr": "0.0.0.0/0",
            "hosts": [{"name": "h", "address": address, "gpus": 0}],
            "nccl": {},
        },
    )
    env = nccl_env(spec, spec.host("h"), facts(recorded))
    assert env.fabric == fabric
    assert ("NCCL_IB_DISABLE" in env.env) == (fabric == "ethernet")
    assert ("NCCL_IB_HCA" in env.env) == (fabric != "ethernet")


@pytest.mark.parametrize(
    ("stack", "host", "recorded", "message"),
    [
        pytest.param(
            "example-ib",
            "gpu-0",
            "cloud-vm",
            r"host gpu-0: network.fabric is infiniband but the facts show no ACTIVE InfiniBand port .*no RDMA devices",
            id="ib-declared-vm",
        ),
        pytest.param(
            "example-ib",
            "gpu-0",
            "roce-a",
            r"host gpu-0: .*infiniband.*\(mlx5_0:1 Ethernet ACTIVE, mlx5_1:1 Ethernet ACTIVE\)",
            id="ib-declared-roce-host",
        ),
        pytest.param(
            "example-roce", "roce-a", "cloud-vm", r"host roce-a: network.fabric is roce", id="roce-declared"
        ),
    ],
)
def test_declared_fabric_contradicted_by_facts(stack: str, host: str, recorded: str, message: str) -> None:
    spec = stack_spec(stack)
    with pytest.raises(GpufleetError, match=message):
        nccl_env(spec, spec.host(host), facts(recorded))


def test_all_ib_ports_down_contradicts_infiniband() -> None:
    spec = spec_with("example-ib", {"hosts.2.hcas": ["mlx5_3"]})
    with pytest.raises(GpufleetError, match=r"host gpu-2: .*mlx5_3:1 InfiniBand DOWN"):
        nccl_env(spec, spec.host("gpu-2"), facts("dgx-h100-port-down"))


def test_socket_interface_is_the_one_with_the_cluster_address_not_docker() -> None:
    spec = spec_with(
        "example-ethernet",
        {
            "network.cluster_cidr": "192.168.1.0/24",
            "hosts": [{"name": "w", "address": "192.168.1.50", "gpus": 0}],
        },
    )
    env = nccl_env(spec, spec.host("w"), facts("workstation-noise"))
    assert (env.env["NCCL_SOCKET_IFNAME"], env.env["GLOO_SOCKET_IFNAME"], env.warnings) == (
        "=enp5s0",
        "enp5s0",
        (),
    )


def test_unknown_address_falls_back_to_excluding_virtual_interfaces() -> None:
    spec = spec_with(
        "example-ethernet",
        {
            "network.cluster_cidr": "192.168.1.0/24",
            "hosts": [{"name": "w", "address": "192.168.1.99", "gpus": 0}],
        },
    )
    env = nccl_env(spec, spec.host("w"), facts("workstation-noise"))
    assert env.env["NCCL_SOCKET_IFNAME"] == "^lo,docker,veth,virbr"
    assert "GLOO_SOCKET_IFNAME" not in env.env
    assert env.warnings == (
        "no interface carries 192.168.1.99: NCCL_SOCKET_IFNAME excludes lo,docker,veth,virbr instead; "
        "check the host's address",
    )


def test_declared_ifname_that_disagrees_with_facts_is_corrected() -> None:
    spec = spec_with("example-ib", {"hosts.0.ifname": "eth9"})
    env = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0"))
    assert env.env["NCCL_SOCKET_IFNAME"] == "=ens10f0"
    assert env.warnings == (
        "the spec gives ifname eth9 but 10.10.1.10 is on ens10f0; using ens10f0 (fix ifname in the spec)",
    )


def test_gpudirect_is_reported_never_forced() -> None:
    """NCCL picks GPUDirect RDMA by topology itself; a forced GDR level is the user's override."""
    spec = stack_spec("example-ib")
    without = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0", gpudirect_module=None))
    assert "NCCL_NET_GDR_LEVEL" not in without.env
    assert (
        "GPUDirect RDMA unavailable unless DMA-BUF provides it: nvidia_peermem is not loaded"
        in without.comments
    )
    loaded = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0"))
    assert "NCCL_NET_GDR_LEVEL" not in loaded.env
    assert "GPUDirect RDMA available: nvidia_peermem is loaded" in loaded.comments


@pytest.mark.parametrize(
    ("stack", "host", "recorded", "override", "warning"),
    [
        pytest.param(
            "example-ib",
            "gpu-0",
            "dgx-h100-0",
            {"NCCL_IB_DISABLE": "1"},
            "override NCCL_IB_DISABLE=1 turns off 8 ACTIVE RDMA port(s): NCCL uses TCP sockets",
            id="ib-disable",
        ),
        pytest.param(
            "example-ib",
            "gpu-0",
            "dgx-h100-0",
            {"NCCL_SOCKET_IFNAME": "=eth7"},
            "override NCCL_SOCKET_IFNAME==eth7: no such interface on this host",
            id="ifname-missing",
        ),
        pytest.param(
            "example-ib",
            "gpu-2",
            "dgx-h100-port-down",
            {"NCCL_IB_HCA": "=mlx5_3:1"},
            "override NCCL_IB_HCA==mlx5_3:1: mlx5_3:1 is not an ACTIVE port on this host",
            id="hca-down",
        ),
        pytest.param(
            "example-roce",
            "roce-a",
            "roce-a",
            {"NCCL_IB_GID_INDEX": "1"},
            "override NCCL_IB_GID_INDEX: GID index 1 on mlx5_0:1 is link-local",
            id="gid-link-local",
        ),
        pytest.param(
            "example-roce",
            "roce-a",
            "roce-a",
            {"NCCL_IB_GID_INDEX": "2"},
            "override NCCL_IB_GID_INDEX: GID index 2 on mlx5_0:1 is a IB/RoCE v1 GID, not RoCE v2",
            id="gid-v1",
        ),
    ],
)
def test_overrides_win_and_contradictions_are_reported(
    stack: str, host: str, recorded: str, override: dict[str, str], warning: str
) -> None:
    spec = spec_with(stack, {"nccl": override})
    env = nccl_env(spec, spec.host(host), facts(recorded))
    for key, value in override.items():
        assert env.env[key] == value
    assert any(w.startswith(warning) for w in env.warnings), env.warnings


def test_override_that_agrees_with_facts_is_not_reported() -> None:
    spec = spec_with(
        "example-roce", {"nccl": {"NCCL_IB_GID_INDEX": "3", "NCCL_SOCKET_IFNAME": "=enp1s0f0np0"}}
    )
    assert nccl_env(spec, spec.host("roce-a"), facts("roce-a")).warnings == ()


@pytest.mark.parametrize(
    ("stack", "host", "recorded"),
    [
        pytest.param("example-ib", "gpu-2", "dgx-h100-port-down", id="ib"),
        pytest.param("example-roce", "roce-a", "roce-a", id="roce"),
        pytest.param("example-ethernet", "vm-0", "cloud-vm", id="vm"),
    ],
)
def test_same_facts_same_env(stack: str, host: str, recorded: str) -> None:
    spec = stack_spec(stack)
    first = nccl_env(spec, spec.host(host), facts(recorded))
    again = nccl_env(spec, spec.host(host), parse_facts(dict(raw_facts(recorded)), "again"))
    assert first == again
    assert list(first.env) == list(again.env)  # same order, so the same nccl.env bytes


SHUFFLED_CASES = [
    ("example-ib", "gpu-2", "dgx-h100-port-down"),
    ("example-roce", "roce-a", "roce-a"),
    ("example-ethernet", "vm-0", "cloud-vm"),
]


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(SHUFFLED_CASES), data=st.data())
def test_listing_order_of_the_facts_does_not_change_the_env(
    case: tuple[str, str, str], data: st.DataObject
) -> None:
    stack, host, recorded = case
    raw: dict[str, Any] = raw_facts(recorded)
    devices = [
        {**d, "ports": [{**p, "gids": data.draw(st.permutations(p["gids"]))} for p in d["ports"]]}
        for d in raw["rdma"] or []
    ]
    shuffled = {
        **raw,
        "rdma": data.draw(st.permutations(devices)) if raw["rdma"] is not None else None,
        "interfaces": data.draw(st.permutations(raw["interfaces"])),
    }
    spec = stack_spec(stack)
    expected = nccl_env(spec, spec.host(host), facts(recorded))
    got = nccl_env(spec, spec.host(host), parse_facts(shuffled, "shuffled"))
    assert (got.env, list(got.env), got.warnings) == (expected.env, list(expected.env), expected.warnings)


def test_declared_storage_hca_is_not_used_for_infiniband() -> None:
    spec = spec_with("example-ib", {"network.reserved_hcas": [], "hosts.0.hcas": ["mlx5_0", "mlx5_8"]})
    env = nccl_env(spec, spec.host("gpu-0"), facts("dgx-h100-0"))
    assert env.env["NCCL_IB_HCA"] == "=mlx5_0:1"
    assert env.warnings == ("declared HCA mlx5_8 is not an ACTIVE infiniband port here; left out",)


def test_spec_only_env_never_names_a_reserved_hca() -> None:
    """Without declared hcas, the storage HCA is excluded by exact name; with them, only they are used."""
    from gpufleet.spec import parse_spec
    from gpufleet.spec.loader import read_stack_config
    from tests.conftest import STACKS_DIR

    raw = read_stack_config(STACKS_DIR / "Pulumi.example-ib.yaml")
    for host in raw["hosts"]:
        del host["hcas"]
    spec = parse_spec(raw)
    assert nccl_env(spec, spec.hosts[0]).env["NCCL_IB_HCA"] == "^=mlx5_8"
    declared = stack_spec("example-ib")
    assert nccl_env(declared, declared.hosts[0]).env["NCCL_IB_HCA"] == "=" + ",".join(
        f"mlx5_{i}" for i in range(8)
    )
