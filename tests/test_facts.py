"""gpufleet/facts.py: parsing probe output, and the helpers derivation and lint rely on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.facts import Gid, load_facts, load_facts_dir, parse_facts
from tests.recorded import facts, raw_facts


@pytest.mark.parametrize(
    ("gid", "kind", "ip", "v2", "link_local"),
    [
        pytest.param(
            "0000:0000:0000:0000:0000:ffff:ac10:0015",
            "RoCE v2",
            "172.16.0.21",
            True,
            False,
            id="v4-mapped-v2",
        ),
        pytest.param(
            "0000:0000:0000:0000:0000:ffff:ac10:0015",
            "IB/RoCE v1",
            "172.16.0.21",
            False,
            False,
            id="v4-mapped-v1",
        ),
        pytest.param(
            "fe80:0000:0000:0000:966d:aeff:fe01:0100",
            "RoCE v2",
            "fe80::966d:aeff:fe01:100",
            True,
            True,
            id="link-local",
        ),
        pytest.param(
            "fd00:0000:0000:0000:0000:0000:0000:0021", "RoCE v2", "fd00::21", True, False, id="v6-ula"
        ),
    ],
)
def test_gid_address_and_kind(gid: str, kind: str, ip: str, v2: bool, link_local: bool) -> None:
    parsed = Gid(index=3, gid=gid, type=kind)
    assert (str(parsed.ip), parsed.is_roce_v2, parsed.is_link_local) == (ip, v2, link_local)


def test_hca_ports_filter_by_link_layer_and_state() -> None:
    down = facts("dgx-h100-port-down")
    assert [p.name for p in down.hca_ports("Ethernet")] == ["mlx5_8:1"]
    active_ib = [p.name for p in down.hca_ports("InfiniBand")]
    assert "mlx5_3:1" not in active_ib and len(active_ib) == 7
    assert len(down.hca_ports("InfiniBand", active_only=False)) == 8
    assert facts("cloud-vm").hca_ports() == []


def test_interface_lookup_by_address() -> None:
    dgx = facts("dgx-h100-0")
    assert dgx.interface_with_address("10.10.1.10").name == "ens10f0"
    assert dgx.interface_with_address("10.10.1.99") is None


@pytest.mark.parametrize(
    ("torch", "version"),
    [
        pytest.param({"nccl_version": "2.18.6"}, (2, 18, 6), id="old"),
        pytest.param({"nccl_version": "2.27.5"}, (2, 27, 5), id="new"),
        pytest.param({"nccl_version": None}, None, id="unknown"),
        pytest.param(None, None, id="no-torch"),
        pytest.param({"nccl_version": "weird"}, None, id="unparsable"),
    ],
)
def test_nccl_version(torch: dict | None, version: tuple | None) -> None:
    assert facts("roce-a", torch=torch).nccl_version == version


def test_other_facts_version_is_refused() -> None:
    with pytest.raises(GpufleetError, match=r"facts_version 99 is not 1.*re-run 'gpufleet probe'"):
        parse_facts({**raw_facts("roce-a"), "facts_version": 99}, "roce-a.json")


def test_bad_field_names_file_and_field() -> None:
    with pytest.raises(GpufleetError, match=r"x\.json: not gpufleet probe output \(interfaces\.0\.name"):
        parse_facts({**raw_facts("roce-a"), "interfaces": [{"mtu": 1}]}, "x.json")


def test_unknown_keys_are_ignored() -> None:
    assert parse_facts({**raw_facts("roce-a"), "from_the_future": 1}, "x") == facts("roce-a")


def test_load_facts_dir(tmp_path: Path) -> None:
    (tmp_path / "roce-a.json").write_text(json.dumps(raw_facts("roce-a")))
    assert load_facts_dir(tmp_path, ["roce-a"]) == {"roce-a": facts("roce-a")}
    with pytest.raises(GpufleetError, match=r"no facts for host.*roce-b"):
        load_facts_dir(tmp_path, ["roce-a", "roce-b"])
    with pytest.raises(GpufleetError, match="no such folder"):
        load_facts_dir(tmp_path / "nope", ["roce-a"])


def test_load_facts_rejects_non_json(tmp_path: Path) -> None:
    (tmp_path / "h.json").write_text("nvidia-smi: command not found\n")
    with pytest.raises(GpufleetError, match="not JSON"):
        load_facts(tmp_path / "h.json")
