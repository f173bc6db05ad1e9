"""What `pulumi up` needs beyond a valid spec: one list, read by the program, validate and the README."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpufleet.spec import parse_spec, spec_warnings
from gpufleet.spec.pulumi_requirements import (
    REQUIREMENTS,
    missing_pulumi_fields,
    pulumi_warnings,
    requirements_reference,
)
from gpufleet.spec.reference import spec_reference
from tests.spec.public_keys import ED25519
from tests.spec.test_models import valid_spec


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(valid_spec())
    spec.update(changes)
    return spec


def _pinned(count: int) -> list[dict[str, Any]]:
    return [
        {"name": f"gpu-{i}", "address": f"10.10.0.{i + 11}", "gpus": 8, "host_key": ED25519}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("spec", "paths"),
    [
        pytest.param(_spec(hosts=_pinned(2)), [], id="complete"),
        pytest.param(_spec(), ["hosts[0].host_key", "hosts[1].host_key"], id="no-host-keys"),
        pytest.param(
            _spec(hosts=_pinned(2), network={"cluster_cidr": "10.10.0.0/24"}),
            ["network.fabric"],
            id="fabric-auto",
        ),
    ],
)
def test_missing_fields_name_each_place(spec: dict[str, Any], paths: list[str]) -> None:
    assert [issue.path for issue in missing_pulumi_fields(parse_spec(spec))] == paths


def test_the_warnings_say_what_pulumi_up_would_refuse() -> None:
    warnings = pulumi_warnings(parse_spec(_spec(network={"cluster_cidr": "10.10.0.0/24"})))
    assert [w.split(" ", 1)[0] for w in warnings] == ["network.fabric:", "hosts"]
    assert "hosts without host_key (gpu-0, gpu-1): 'pulumi up' refuses them" in warnings[1]
    assert not pulumi_warnings(parse_spec(_spec(provisioner="local")))


def test_the_host_list_in_a_warning_is_bounded() -> None:
    hosts = [
        {"name": f"gpu-{i}", "address": f"10.10.{i // 250}.{i % 250 + 1}", "gpus": 0} for i in range(5000)
    ]
    spec = parse_spec(_spec(hosts=hosts, network={"cluster_cidr": "10.10.0.0/16", "fabric": "ethernet"}))
    (warning,) = [w for w in spec_warnings(spec) if "host_key" in w]
    assert "gpu-9 and 4,990 more" in warning and len(warning) < 600


def test_every_requirement_is_in_the_readme_reference() -> None:
    reference = spec_reference()
    assert requirements_reference()[-len(REQUIREMENTS) :] == [
        f"- `{r.field}`: {r.needs}." for r in REQUIREMENTS
    ]
    assert all(f"- `{r.field}`" in reference for r in REQUIREMENTS)
