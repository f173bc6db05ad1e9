"""The spec fields the Pulumi program needs: hosts[].host_key and runner.identity_file."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from gpufleet.errors import SpecError
from gpufleet.spec import parse_spec
from tests.conftest import stack_spec

ED25519 = "ssh-ed25519"


def _ed25519_line(seed: int, comment: str = "") -> str:
    blob = struct.pack(">I", len(ED25519)) + ED25519.encode() + struct.pack(">I", 32) + bytes([seed]) * 32
    line = f"{ED25519} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def _spec(host: dict[str, Any] | None = None, runner: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "fields",
        "image": {"name": "registry.example.com/ml/train"},
        "ssh": {"authorized_keys": [_ed25519_line(1)], "admin_cidrs": ["10.20.0.0/24"]},
        "network": {"cluster_cidr": "10.10.0.0/24", "fabric": "ethernet"},
        "hosts": [{"name": "gpu-0", "address": "10.10.0.10", "gpus": 1, **(host or {})}],
    }
    if runner is not None:
        data["runner"] = runner
    return data


def _issues(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    return {issue.path: issue.message for issue in caught.value.issues}


def test_host_key_is_optional_and_defaults_to_none() -> None:
    assert parse_spec(_spec()).hosts[0].host_key is None


def test_host_key_drops_the_comment() -> None:
    spec = parse_spec(_spec(host={"host_key": _ed25519_line(7, "root@gpu-0")}))
    assert spec.hosts[0].host_key == _ed25519_line(7)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("-----BEGIN OPENSSH PRIVATE KEY-----", "PRIVATE key", id="private-key"),
        pytest.param("ssh-ed25519", "not an OpenSSH public key line", id="no-key-data"),
        pytest.param("ssh-dss AAAAB3NzaC1kc3M=", "DSA", id="dsa"),
        pytest.param("ssh-ed25519 bm90IGEga2V5", "not valid base64 key material", id="garbage-blob"),
        pytest.param(_ed25519_line(1) + "\nPermitRootLogin yes", "control character", id="newline"),
    ],
)
def test_bad_host_keys_are_refused_with_the_field_path(value: str, expected: str) -> None:
    issues = _issues(_spec(host={"host_key": value}))
    assert list(issues) == ["hosts[0].host_key"]
    assert expected in issues["hosts[0].host_key"]


def test_runner_identity_file_has_a_default() -> None:
    assert parse_spec(_spec()).runner.identity_file == "~/.ssh/id_ed25519"


@pytest.mark.parametrize(
    "value", [pytest.param("/keys/runner", id="absolute"), pytest.param("~/.ssh/ops", id="home")]
)
def test_runner_identity_file_accepts_paths(value: str) -> None:
    assert parse_spec(_spec(runner={"identity_file": value})).runner.identity_file == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("-----BEGIN OPENSSH PRIVATE KEY-----", "not a path", id="key-content"),
        pytest.param("id_ed25519", "absolute", id="relative"),
        pytest.param("~/my key", "without spaces", id="space"),
    ],
)
def test_runner_identity_file_refuses_non_paths(value: str, expected: str) -> None:
    issues = _issues(_spec(runner={"identity_file": value}))
    assert expected in issues["runner.identity_file"]


def test_runner_refuses_unknown_keys() -> None:
    issues = _issues(_spec(runner={"private_key": "x"}))
    assert "unknown key" in issues["runner.private_key"]


@pytest.mark.parametrize("name", ["example-ib", "example-roce", "example-ethernet"])
def test_shipped_pulumi_stacks_pin_every_host_key(name: str) -> None:
    spec = stack_spec(name)
    assert spec.provisioner == "pulumi"
    keys = [host.host_key for host in spec.hosts]
    assert all(keys), f"{name}: a host without host_key cannot be reached by the Pulumi program"
    assert len(set(keys)) == len(keys), f"{name}: two hosts share one host key"
