"""gpufleet/lint/rules.py: each rule against specs and recorded host facts."""

from __future__ import annotations

from typing import Any

import pytest

from gpufleet.errors import SpecError
from gpufleet.facts import HostFacts
from gpufleet.lint import Finding, has_errors, lint
from tests.conftest import stack_spec
from tests.recorded import facts, raw_facts, spec_with

IB_FACTS = {"gpu-0": "dgx-h100-0", "gpu-1": "dgx-h100-1"}


def codes(findings: list[Finding]) -> list[tuple[str, str, str | None]]:
    return [(f.severity, f.code, f.host) for f in findings]


def recorded(mapping: dict[str, str], **changes: Any) -> dict[str, HostFacts]:
    return {host: facts(name, **changes) for host, name in mapping.items()}


def test_shipped_stacks_are_clean(shipped_stack: str) -> None:
    assert lint(stack_spec(shipped_stack)) == []


# --- spec rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "changes", "expected"),
    [
        pytest.param(
            "example-ib",
            {"container.network_mode": "bridge"},
            [("error", "bridge-network", None)],
            id="bridge",
        ),
        pytest.param(
            "example-ib",
            {"container.memlock_unlimited": False},
            [("error", "memlock-limited", None)],
            id="memlock-rdma",
        ),
        pytest.param(
            "example-ethernet",
            {"container.memlock_unlimited": False},
            [("warning", "memlock-limited", None)],
            id="memlock-ethernet",
        ),
        pytest.param("example-ib", {"container.shm_size_gib": 0}, [("error", "shm-small", None)], id="shm-0"),
        pytest.param(
            "example-ib", {"container.shm_size_gib": 0, "container.ipc_host": True}, [], id="shm-ipc-host"
        ),
        pytest.param(
            "example-ib", {"nccl": {"NCCL_DEBUG": "INFO"}}, [("warning", "nccl-debug", None)], id="debug-info"
        ),
        pytest.param(
            "example-ib",
            {"nccl": {"NCCL_DEBUG": "trace"}},
            [("warning", "nccl-debug", None)],
            id="debug-trace",
        ),
        pytest.param("example-ib", {"nccl": {"NCCL_DEBUG": "WARN"}}, [], id="debug-warn"),
        pytest.param(
            "example-ib",
            {"nccl": {"NCCL_P2P_DISABLE": "1"}},
            [("warning", "unexplained-override", None)],
            id="p2p-disable",
        ),
        pytest.param(
            "example-ib",
            {
                "nccl": {"NCCL_P2P_DISABLE": "1"},
                "nccl_reasons": {"NCCL_P2P_DISABLE": "ACS on, see ticket 42"},
            },
            [],
            id="p2p-disable-with-reason",
        ),
        pytest.param("example-ib", {"nccl": {"NCCL_P2P_DISABLE": "0"}}, [], id="p2p-enabled"),
        pytest.param(
            "example-ib",
            {"nccl": {"NCCL_ALGO": "Ring"}},
            [("warning", "unexplained-override", None)],
            id="algo",
        ),
        pytest.param(
            "example-ib",
            {"nccl": {"NCCL_PROTO": "Simple"}},
            [("warning", "unexplained-override", None)],
            id="proto",
        ),
        pytest.param(
            "example-ib",
            {"nccl": {"NCCL_SOCKET_IFNAME": "docker0"}},
            [("error", "socket-ifname-virtual", f"gpu-{i}") for i in range(4)],
            id="ifname-docker",
        ),
        pytest.param(
            "example-ethernet",
            {"hosts.1.ifname": "virbr0"},
            [("error", "socket-ifname-virtual", "vm-1")],
            id="host-ifname-virbr",
        ),
        pytest.param("example-ib", {"nccl": {"NCCL_SOCKET_IFNAME": "^docker,lo"}}, [], id="ifname-exclusion"),
    ],
)
def test_spec_rules(stack: str, changes: dict[str, Any], expected: list[tuple[str, str, str | None]]) -> None:
    assert codes(lint(spec_with(stack, changes))) == expected


# --- fact rules --------------------------------------------------------------------------


def test_healthy_ib_hosts_are_clean() -> None:
    assert lint(stack_spec("example-ib"), recorded(IB_FACTS)) == []


def test_hosts_without_facts_get_spec_rules_only() -> None:
    assert lint(stack_spec("example-ib"), {"gpu-0": facts("dgx-h100-0")}) == []


def test_port_down_host_differs_from_the_others() -> None:
    findings = lint(stack_spec("example-ib"), recorded({**IB_FACTS, "gpu-2": "dgx-h100-port-down"}))
    assert codes(findings) == [("warning", "hosts-differ", None), ("warning", "nccl-derivation", "gpu-2")]
    assert findings[0].message == "hosts differ in active HCA count (7: gpu-2; 8: gpu-0, gpu-1)"
    assert not has_errors(findings)


def test_cloud_vm_in_a_default_docker_container() -> None:
    findings = lint(stack_spec("example-ethernet"), {"vm-0": facts("cloud-vm")})
    assert codes(findings) == [("error", "shm-small", "vm-0"), ("warning", "memlock-limited", "vm-0")]
    assert findings[0].message == "/dev/shm is 64 MiB"
    assert findings[1].message == "memlock limit is 65536 bytes, not unlimited"


def test_rdma_host_with_limited_memlock_is_an_error() -> None:
    memlock = {"soft": 65536, "hard": 65536}
    findings = lint(stack_spec("example-ib"), {"gpu-0": facts("dgx-h100-0", memlock=memlock)})
    assert codes(findings) == [("error", "memlock-limited", "gpu-0")]


@pytest.mark.parametrize(
    ("changes", "facts_changes", "expected"),
    [
        pytest.param(
            {"nccl": {"NCCL_IB_DISABLE": "1"}},
            {},
            [("error", "ib-disabled", "gpu-0")],
            id="ib-disable-override",
        ),
        pytest.param(
            {"network.fabric": "auto"},
            {},
            [("error", "rdma-not-in-container", "gpu-0")],
            id="auto-fabric-no-device",
        ),
        pytest.param(
            {},
            {"source": "live", "dev_infiniband": None},
            [("error", "rdma-not-in-container", "gpu-0")],
            id="live-no-dev-infiniband",
        ),
        pytest.param(
            {},
            {"source": "live", "dev_infiniband": ["rdma_cm"]},
            [("error", "rdma-not-in-container", "gpu-0")],
            id="live-no-uverbs",
        ),
        pytest.param({}, {"source": "live"}, [], id="live-with-uverbs"),
        pytest.param(
            {}, {"libibverbs": None}, [("error", "libibverbs-missing", "gpu-0")], id="no-libibverbs"
        ),
        pytest.param(
            {}, {"ibverbs_providers": []}, [("error", "libibverbs-missing", "gpu-0")], id="no-provider"
        ),
        pytest.param(
            {"nccl": {"NCCL_SOCKET_IFNAME": "=eth7"}},
            {},
            [("error", "socket-ifname-missing", "gpu-0")],
            id="ifname-missing",
        ),
        pytest.param(
            {}, {"gpudirect_module": None}, [("warning", "gpudirect-off", "gpu-0")], id="no-peermem"
        ),
        pytest.param({}, {"gpus": []}, [("warning", "gpu-count", "gpu-0")], id="gpus-missing"),
        pytest.param({}, {"shm_bytes": 2**29}, [("error", "shm-small", "gpu-0")], id="shm-512m"),
    ],
)
def test_fact_rules_on_an_ib_host(
    changes: dict[str, Any], facts_changes: dict[str, Any], expected: list[tuple[str, str, str | None]]
) -> None:
    findings = lint(spec_with("example-ib", changes), {"gpu-0": facts("dgx-h100-0", **facts_changes)})
    assert codes(findings) == expected


def test_ib_disabled_by_an_ethernet_fabric_is_a_warning() -> None:
    spec = spec_with(
        "example-ib",
        {
            "network.fabric": "ethernet",
            "network.reserved_hcas": [],
            **{f"hosts.{i}.hcas": [] for i in range(4)},
        },
    )
    findings = lint(spec, {"gpu-0": facts("dgx-h100-0")})
    assert codes(findings) == [("warning", "ib-disabled", "gpu-0")]
    assert "9 RDMA port(s) are ACTIVE" in findings[0].message


def test_fabric_contradiction_names_the_host() -> None:
    findings = lint(stack_spec("example-ib"), {"gpu-1": facts("cloud-vm")})
    assert codes(findings) == [("error", "fabric-contradiction", "gpu-1")]
    assert findings[0].message.startswith("host gpu-1: network.fabric is infiniband")


def test_down_port_named_in_nccl_ib_hca() -> None:
    spec = spec_with("example-ib", {"nccl": {"NCCL_IB_HCA": "=mlx5_2:1,mlx5_3:1"}})
    findings = lint(spec, {"gpu-2": facts("dgx-h100-port-down")})
    assert ("error", "hca-not-active", "gpu-2") in codes(findings)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        pytest.param("0", "GID index 0 on mlx5_0:1 is a IB/RoCE v1 GID, not RoCE v2", id="v1"),
        pytest.param("1", "GID index 1 on mlx5_0:1 is link-local", id="link-local"),
        pytest.param("7", "GID index 7 is empty on mlx5_0:1", id="empty"),
    ],
)
def test_roce_gid_index_pointing_at_the_wrong_gid(index: str, message: str) -> None:
    spec = spec_with("example-roce", {"nccl": {"NCCL_IB_GID_INDEX": index}})
    findings = lint(spec, {"roce-a": facts("roce-a")})
    assert codes(findings) == [("error", "roce-gid", "roce-a")]
    assert findings[0].message.startswith(message)


def test_roce_hosts_clean_and_nccl_versions_must_match() -> None:
    spec = stack_spec("example-roce")
    assert lint(spec, {"roce-a": facts("roce-a"), "roce-b": facts("roce-b")}) == []
    newer = {**raw_facts("roce-b")["torch"], "nccl_version": "2.21.5"}
    findings = lint(spec, {"roce-a": facts("roce-a"), "roce-b": facts("roce-b", torch=newer)})
    assert codes(findings) == [("error", "nccl-version-differs", None)]
    assert findings[0].message == "hosts differ in NCCL version (2.18.6: roce-a; 2.21.5: roce-b)"


def test_hosts_differ_in_link_rate() -> None:
    slow: dict[str, Any] = raw_facts("dgx-h100-1")
    devices = [dict(d) for d in slow["rdma"]]
    devices[0]["ports"] = [{**devices[0]["ports"][0], "rate": "200 Gb/sec (4X HDR)", "rate_gbps": 200.0}]
    findings = lint(
        stack_spec("example-ib"), {"gpu-0": facts("dgx-h100-0"), "gpu-1": facts("dgx-h100-1", rdma=devices)}
    )
    assert [f.message for f in findings] == [
        "hosts differ in link rate (200 Gb/sec (4X HDR),400 Gb/sec (4X NDR): gpu-1; 400 Gb/sec (4X NDR): gpu-0)"
    ]


def test_hosts_differ_in_interface_names() -> None:
    spec = spec_with("example-ib", {"hosts.1.ifname": None})
    renamed: dict[str, Any] = raw_facts("dgx-h100-1")
    interfaces = [{**i, "name": "eth0"} if i["name"] == "ens10f0" else i for i in renamed["interfaces"]]
    findings = lint(spec, {"gpu-0": facts("dgx-h100-0"), "gpu-1": facts("dgx-h100-1", interfaces=interfaces)})
    assert [f.message for f in findings] == [
        "hosts differ in socket interface (=ens10f0: gpu-0; =eth0: gpu-1)"
    ]


def test_every_finding_says_why_and_how_to_fix() -> None:
    spec = spec_with(
        "example-ib",
        {
            "container.network_mode": "bridge",
            "container.memlock_unlimited": False,
            "container.shm_size_gib": 0,
            "nccl": {"NCCL_DEBUG": "INFO", "NCCL_ALGO": "Tree", "NCCL_IB_DISABLE": "1"},
        },
    )
    findings = lint(spec, {"gpu-0": facts("dgx-h100-0", libibverbs=None), "gpu-1": facts("cloud-vm")})
    assert len({f.code for f in findings}) >= 7
    for finding in findings:
        assert len(finding.why) > 20 and len(finding.fix) > 10, finding
    assert [f.severity for f in findings] == sorted(
        (f.severity for f in findings), key=lambda s: s != "error"
    )


def test_reason_for_an_override_that_is_not_set_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"cluster\.nccl_reasons\.NCCL_ALGO: gives a reason for NCCL_ALGO"):
        spec_with("example-ib", {"nccl_reasons": {"NCCL_ALGO": "tree hangs on our switch firmware"}})


def test_workstation_with_virtual_interfaces() -> None:
    spec = spec_with(
        "example-ethernet",
        {
            "network.cluster_cidr": "192.168.1.0/24",
            "hosts": [{"name": "w", "address": "192.168.1.50", "gpus": 0}],
        },
    )
    findings = lint(spec, {"w": facts("workstation-noise")})
    # It picks enp5s0 over docker0/veth/virbr; only the host's 8 MiB memlock is worth a word.
    assert codes(findings) == [("warning", "memlock-limited", "w")]
    forced = lint(spec_with("example-ethernet", {"nccl": {"NCCL_SOCKET_IFNAME": "=virbr0"}}), {})
    assert {c for _, c, _ in codes(forced)} == {"socket-ifname-virtual"}
