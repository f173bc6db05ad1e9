"""gpufleet/probe.py against recorded hosts, a broken tree, the live host, and as a bare script."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gpufleet.probe as probe_module
from gpufleet.facts import HostFacts
from gpufleet.probe import probe
from tests.recorded import HOSTS_DIR, RECORDED, raw_facts

PROBE_SOURCE = Path(probe_module.__file__)


def _port(facts: dict, device: str) -> dict:
    return next(d for d in facts["rdma"] if d["name"] == device)["ports"][0]


def _iface(facts: dict, name: str) -> dict:
    return next(i for i in facts["interfaces"] if i["name"] == name)


@pytest.mark.parametrize("name", RECORDED)
def test_output_is_exactly_the_facts_model(name: str) -> None:
    raw = probe(HOSTS_DIR / name)
    # Equal after a round trip: the probe emits no key the model would silently drop.
    assert HostFacts.model_validate(raw).model_dump() == raw
    assert raw["source"] == "recorded"
    assert raw["notes"] == [] or name == "workstation-noise"


@pytest.mark.parametrize("name", RECORDED)
def test_same_tree_gives_same_facts(name: str) -> None:
    assert probe(HOSTS_DIR / name) == probe(HOSTS_DIR / name)


def test_infiniband_node() -> None:
    facts = raw_facts("dgx-h100-0")
    assert [d["name"] for d in facts["rdma"]] == [f"mlx5_{i}" for i in range(9)]
    port = _port(facts, "mlx5_0")
    assert port == {
        "port": 1,
        "state": "ACTIVE",
        "phys_state": "LinkUp",
        "link_layer": "InfiniBand",
        "rate": "400 Gb/sec (4X NDR)",
        "rate_gbps": 400.0,
        "gids": [
            {"index": 0, "gid": "fe80:0000:0000:0000:a088:c203:0000:0040", "type": "IB/RoCE v1", "ndev": None}
        ],
    }
    assert facts["rdma"][0]["netdevs"] == ["ibp24s0"]
    assert _port(facts, "mlx5_8")["link_layer"] == "Ethernet"
    assert facts["rdma"][8]["netdevs"] == ["enp159s0f0np0"]
    assert facts["gpudirect_module"] == "nvidia_peermem"
    assert len(facts["gpus"]) == 8 and facts["gpus"][0]["memory_mib"] == 81559
    assert facts["dev_infiniband"][:2] == ["rdma_cm", "uverbs0"]
    assert facts["libibverbs"] == "/usr/lib/x86_64-linux-gnu/libibverbs.so.1"
    assert facts["ibverbs_providers"] == ["libmlx5-rdmav34.so"]


def test_port_down_node() -> None:
    port = _port(raw_facts("dgx-h100-port-down"), "mlx5_3")
    assert (port["state"], port["phys_state"], port["rate_gbps"]) == ("DOWN", "Polling", 10.0)
    assert _port(raw_facts("dgx-h100-port-down"), "mlx5_4")["state"] == "ACTIVE"


def test_roce_gid_table_types_and_netdevs() -> None:
    gids = _port(raw_facts("roce-a"), "mlx5_0")["gids"]
    assert [(g["index"], g["type"], g["ndev"]) for g in gids] == [
        (0, "IB/RoCE v1", "enp1s0f0np0"),
        (1, "RoCE v2", "enp1s0f0np0"),
        (2, "IB/RoCE v1", "enp1s0f0np0"),
        (3, "RoCE v2", "enp1s0f0np0"),
    ]
    assert gids[3]["gid"] == "0000:0000:0000:0000:0000:ffff:ac10:0015"  # ::ffff:172.16.0.21
    assert gids[0]["gid"].startswith("fe80:")


def test_interfaces_flag_virtual_ones_and_read_addresses() -> None:
    facts = raw_facts("workstation-noise")
    virtual = {i["name"] for i in facts["interfaces"] if i["virtual"]}
    assert virtual == {"lo", "docker0", "br-5e1f0c9d2a77", "veth3f1a2b9", "virbr0"}
    enp = _iface(facts, "enp5s0")
    assert enp["addresses"] == [{"family": "inet", "address": "192.168.1.50", "prefixlen": 24}]
    assert (enp["speed_mbps"], enp["operstate"], enp["mtu"]) == (2500, "up", 1500)
    assert _iface(facts, "wlp3s0")["speed_mbps"] is None  # sysfs says -1: unknown


@pytest.mark.parametrize(
    ("name", "key"),
    [
        pytest.param("cloud-vm", "rdma", id="no-infiniband-class"),
        pytest.param("cloud-vm", "dev_infiniband", id="no-uverbs"),
        pytest.param("cloud-vm", "libibverbs", id="no-libibverbs"),
        pytest.param("cloud-vm", "gpudirect_module", id="no-peermem"),
        pytest.param("workstation-noise", "gpus", id="no-nvidia-smi"),
        pytest.param("workstation-noise", "torch", id="no-torch"),
    ],
)
def test_missing_parts_are_absent(name: str, key: str) -> None:
    assert raw_facts(name)[key] is None


def test_empty_root_is_all_absent_with_notes(tmp_path: Path) -> None:
    facts = probe(tmp_path)
    assert (facts["interfaces"], facts["rdma"], facts["gpus"], facts["memlock"]) == ([], None, None, None)
    notes = " ".join(facts["notes"])
    for part in ("ip-addr.json", "runtime.json", "nvidia-smi", "/proc/modules"):
        assert part in notes
    HostFacts.model_validate(facts)


def test_unreadable_attributes_become_none(tmp_path: Path) -> None:
    root = tmp_path / "host"
    shutil.copytree(HOSTS_DIR / "roce-a", root, symlinks=True)
    port = root / "sys/devices/pci0000:01/0000:01:00.0/infiniband/mlx5_0/ports/1"
    (port / "gid_attrs/types/3").unlink()
    (port / "rate").unlink()
    (root / "sys/devices/pci0000:01/0000:01:00.0/net/enp1s0f0np0/speed").write_text("garbage\n")
    (root / "ip-addr.json").write_text("{not json")
    facts = probe(root)
    gid = _port(facts, "mlx5_0")["gids"][3]
    assert (gid["index"], gid["type"]) == (3, None)
    assert _port(facts, "mlx5_0")["rate_gbps"] is None
    assert _iface(facts, "enp1s0f0np0")["speed_mbps"] is None
    assert _iface(facts, "enp1s0f0np0")["addresses"] == []
    assert any("ip-addr.json" in note for note in facts["notes"])


def test_live_host_never_crashes() -> None:
    facts = HostFacts.model_validate(probe())
    assert facts.source == "live"
    assert facts.memlock is not None
    assert facts.interface("lo") is not None and facts.interface("lo").has_address("127.0.0.1")


def test_ioctl_fallback_reads_loopback() -> None:
    addresses = probe_module._live_addresses_without_ip(["lo"])
    assert {"family": "inet", "address": "127.0.0.1", "prefixlen": 8} in addresses["lo"]


def test_uses_the_standard_library_only() -> None:
    tree = ast.parse(PROBE_SOURCE.read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules - {"__future__"} <= sys.stdlib_module_names


@pytest.mark.parametrize(
    "how",
    [pytest.param("file", id="python3-probe.py"), pytest.param("source", id="python3-c-source")],
)
def test_runs_as_a_bare_script_without_gpufleet(how: str, tmp_path: Path) -> None:
    # -I: isolated, so gpufleet cannot be imported; run from an empty folder like a remote host.
    root = str(HOSTS_DIR / "roce-a")
    if how == "file":
        command = [sys.executable, "-I", str(PROBE_SOURCE), "--root", root]
    else:
        command = [sys.executable, "-I", "-c", PROBE_SOURCE.read_text(), "--root", root]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60, check=True)
    assert json.loads(result.stdout) == probe(HOSTS_DIR / "roce-a")


def test_missing_root_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-I", str(PROBE_SOURCE), "--root", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no such directory" in result.stderr


def test_torch_versions_from_the_wheels_and_from_a_child_python() -> None:
    from importlib.metadata import version

    notes: list[str] = []
    from_wheels = probe_module.probe_torch(False, notes)
    assert from_wheels is not None and from_wheels["version"] == version("torch")
    imported = probe_module.probe_torch(True, notes)
    assert notes == []
    assert imported is not None and imported["version"].split("+")[0] == version("torch").split("+")[0]
    assert imported["cuda_available"] is False  # the CPU build here: no torch.cuda.nccl query
