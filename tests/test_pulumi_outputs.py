"""Stack outputs JSON -> inventory + controller key (gpufleet.pulumi_outputs)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.testing import fake_ed25519
from gpufleet.errors import GpufleetError
from gpufleet.pulumi_outputs import host_output, inventory_from_outputs, parse_stack_outputs

PUBLIC, PRIVATE = fake_ed25519("outputs-test")


def _outputs() -> dict[str, Any]:
    return {
        "cluster": "c1",
        "inventory": [
            host_output(
                name="gpu-0",
                address="10.0.0.1",
                ssh_address="192.168.0.1",
                ssh_port=2222,
                user="trainer",
                host_key=PUBLIC,
            ),
            host_output(
                name="gpu-1",
                address="10.0.0.2",
                ssh_address="10.0.0.2",
                ssh_port=22,
                user="trainer",
                host_key=PUBLIC + " comment",
            ),
        ],
        "controller_private_key": PRIVATE,
        "controller_public_key": PUBLIC,
        "image_digest": "sha256:" + "a" * 64,
        "nccl_env": {"gpu-0": {"NCCL_DEBUG": "WARN"}, "gpu-1": {"NCCL_DEBUG": "WARN"}},
    }


def test_host_output_carries_the_known_hosts_line() -> None:
    entry = _outputs()["inventory"][0]
    assert entry["known_hosts"] == f"[192.168.0.1]:2222 {PUBLIC}"
    assert _outputs()["inventory"][1]["known_hosts"] == f"10.0.0.2 {PUBLIC}"
    assert _outputs()["inventory"][1]["host_key"] == PUBLIC, "the comment is not part of the pin"


def test_round_trip_through_json() -> None:
    inventory, key = inventory_from_outputs(parse_stack_outputs(json.dumps(_outputs())))
    assert key == PRIVATE
    assert inventory.cluster == "c1" and inventory.provisioner == "pulumi"
    assert [h.known_hosts_line() for h in inventory.hosts] == [
        h["known_hosts"] for h in _outputs()["inventory"]
    ]
    assert inventory.image_digest == "sha256:" + "a" * 64
    assert inventory.nccl_env["gpu-1"] == {"NCCL_DEBUG": "WARN"}


def test_float_ports_from_json_are_accepted() -> None:
    outputs = _outputs()
    outputs["inventory"][0]["ssh_port"] = 2222.0
    inventory, _ = inventory_from_outputs(outputs)
    assert inventory.hosts[0].ssh_port == 2222


def _broken(edit: Any) -> dict[str, Any]:
    outputs = copy.deepcopy(_outputs())
    edit(outputs)
    return outputs


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        pytest.param({}, "no output cluster, inventory, controller_private_key", id="empty-stack"),
        pytest.param(
            _broken(lambda o: o.update(controller_private_key="[secret]")),
            "--show-secrets",
            id="masked-secret",
        ),
        pytest.param(_broken(lambda o: o.update(inventory={"a": 1})), "not a list", id="inventory-not-list"),
        pytest.param(
            _broken(lambda o: o["inventory"][0].pop("user")), "inventory[0]: user", id="missing-field"
        ),
        pytest.param(
            _broken(lambda o: o["inventory"][1].update(host_key="ssh-ed25519 bm9wZQ==")),
            "inventory[1].host_key",
            id="bad-host-key",
        ),
        pytest.param(
            _broken(lambda o: o["inventory"][0].update(ssh_port=22)),
            "known_hosts does not match",
            id="mismatch",
        ),
        pytest.param(_broken(lambda o: o.update(nccl_env={"gpu-0": "x"})), "nccl_env", id="bad-nccl"),
    ],
)
def test_bad_outputs_say_what_is_wrong(outputs: dict[str, Any], expected: str) -> None:
    with pytest.raises(GpufleetError) as caught:
        inventory_from_outputs(outputs)
    assert expected in str(caught.value)


@pytest.mark.parametrize("text", [pytest.param("not json", id="text"), pytest.param("[1]", id="list")])
def test_parse_refuses_non_objects(text: str) -> None:
    with pytest.raises(GpufleetError, match="pulumi stack output"):
        parse_stack_outputs(text)
