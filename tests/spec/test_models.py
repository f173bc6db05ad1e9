"""The spec refuses bad input with the field path and a message that says what to do."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpufleet.errors import SpecError
from gpufleet.spec import parse_spec, spec_warnings
from tests.conftest import stack_spec
from tests.spec.public_keys import DSA, ECDSA, ED25519, RSA_2048, RSA_3072


def valid_spec() -> dict[str, Any]:
    return {
        "name": "test",
        "image": {"name": "registry.example.com/ml/train", "digest": "sha256:" + "a" * 64},
        "ssh": {"authorized_keys": [ED25519], "admin_cidrs": ["10.20.0.0/24"]},
        "network": {"cluster_cidr": "10.10.0.0/24", "fabric": "infiniband"},
        "nas": [
            {"name": "data", "server": "10.10.0.250", "export": "/export/data", "mount": "/data"},
            {"name": "ckpt", "server": "10.10.0.250", "export": "/export/ckpt", "mount": "/checkpoints"},
        ],
        "hosts": [
            {"name": "gpu-0", "address": "10.10.0.11", "gpus": 8, "ifname": "eth0"},
            {"name": "gpu-1", "address": "10.10.0.12", "gpus": 8, "ifname": "eth0"},
        ],
    }


def mutated(path: str, value: Any) -> dict[str, Any]:
    """A valid spec with one value replaced; path like 'hosts.1.address'."""
    spec = copy.deepcopy(valid_spec())
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return spec


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, source="stack.yaml")
    return [(issue.path, issue.message) for issue in caught.value.issues]


def test_valid_spec_parses() -> None:
    spec = parse_spec(valid_spec())
    assert [h.name for h in spec.hosts] == ["gpu-0", "gpu-1"]
    assert spec.ssh.port == 2222 and spec.network.rdzv_port == 29400


def test_every_shipped_stack_validates(shipped_stack: str) -> None:
    spec = stack_spec(shipped_stack)
    assert spec.hosts


INVALID = [
    pytest.param(mutated("ssh.portt", 22), "ssh.portt", "unknown key", id="unknown-key"),
    pytest.param(mutated("hosts.0.name", "GPU_0"), "hosts[0].name", "not a valid name", id="bad-host-name"),
    pytest.param(
        mutated("hosts.1.name", "gpu-0"), "hosts[1].name", "duplicate host name", id="dup-host-name"
    ),
    pytest.param(
        mutated("hosts.1.address", "10.10.0.11"), "hosts[1].address", "already used", id="dup-address"
    ),
    pytest.param(
        mutated("hosts.1.address", "10.99.0.1"),
        "hosts[1].address",
        "outside network.cluster_cidr",
        id="address-outside-cidr",
    ),
    pytest.param(
        mutated("hosts.1.address", "10.10.0.300"), "hosts[1].address", "not an IP address", id="bad-address"
    ),
    pytest.param(
        mutated("network.cluster_cidr", "10.10.0.0/33"),
        "network.cluster_cidr",
        "not a CIDR",
        id="malformed-cidr",
    ),
    pytest.param(
        mutated("network.cluster_cidr", "10.10.0.5/24"),
        "network.cluster_cidr",
        "host bits set",
        id="cidr-host-bits",
    ),
    pytest.param(mutated("ssh.admin_cidrs", ["0.0.0.0/0"]), "ssh", "whole internet", id="public-ssh-v4"),
    pytest.param(mutated("ssh.admin_cidrs", ["::/0"]), "ssh", "whole internet", id="public-ssh-v6"),
    pytest.param(mutated("ssh.admin_cidrs", []), "ssh.admin_cidrs", "at least 1", id="no-admin-cidrs"),
    pytest.param(mutated("ssh.authorized_keys", []), "ssh.authorized_keys", "is empty", id="no-keys"),
    pytest.param(
        mutated("ssh.authorized_keys", ["hello world"]),
        "ssh.authorized_keys",
        "not an OpenSSH public key",
        id="not-a-key",
    ),
    pytest.param(
        mutated("ssh.authorized_keys", ["-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXk"]),
        "ssh.authorized_keys",
        "PRIVATE key",
        id="private-key",
    ),
    pytest.param(mutated("ssh.authorized_keys", [DSA]), "ssh.authorized_keys", "DSA keys", id="dsa-key"),
    pytest.param(
        mutated("ssh.authorized_keys", [RSA_2048]),
        "ssh.authorized_keys",
        "2048 bits is too weak",
        id="rsa-2048",
    ),
    pytest.param(mutated("ssh.user", "root"), "ssh.user", "root logins are refused", id="root-user"),
    pytest.param(
        mutated("image.digest", "sha512:" + "a" * 128), "image.digest", "sha256", id="digest-sha512"
    ),
    pytest.param(
        mutated("image.digest", "sha256:" + "A" * 64), "image.digest", "sha256", id="digest-uppercase"
    ),
    pytest.param(
        mutated("image.name", "repo/train@sha256:" + "a" * 64),
        "image.name",
        "image.digest",
        id="digest-in-name",
    ),
    pytest.param(
        mutated("nas.1.mount", "checkpoints"), "nas[1].mount", "not an absolute path", id="relative-mount"
    ),
    pytest.param(
        mutated("nas.1.mount", "/data"), "nas[1].mount", "also the mount of nas[0]", id="duplicate-mount"
    ),
    pytest.param(mutated("nas.1.mount", "/data/ckpt"), "nas[1].mount", "nested", id="nested-mount"),
    pytest.param(
        mutated("nas.1.mount", "/data/../ckpt"), "nas[1].mount", "clean absolute path", id="dotdot-mount"
    ),
    pytest.param(
        mutated("nas.1.options", ["nfsvers=4.1,ro"]), "nas[1].options", "one NFS option", id="nfs-option-list"
    ),
    pytest.param(
        mutated("nccl", {"LD_PRELOAD": "/tmp/evil.so"}),
        "nccl.LD_PRELOAD",
        "not an allowed override",
        id="nccl-bad-prefix",
    ),
    pytest.param(
        mutated("nccl", {"NCCL_DEBUG": "WARN\nPermitRootLogin yes"}),
        "nccl.NCCL_DEBUG",
        "newline",
        id="nccl-newline",
    ),
    pytest.param(
        mutated("hosts.0.ifname", "eth0\nAllowUsers root"), "hosts[0].ifname", "newline", id="ifname-newline"
    ),
    pytest.param(
        mutated("ssh.authorized_keys", [ED25519 + "\nssh-ed25519 AAAA evil"]),
        "ssh.authorized_keys[0]",
        "newline",
        id="key-newline",
    ),
    pytest.param(
        mutated("image.base", "ubuntu\x1b[31m"), "image.base", "control character", id="escape-char"
    ),
    pytest.param(mutated("ssh.port", 70000), "ssh.port", "less than or equal to 65535", id="port-range"),
    pytest.param(mutated("ssh.port", 29400), "network.rdzv_port", "collides with ssh.port", id="ssh-vs-rdzv"),
    pytest.param(
        mutated("jupyter", {"enabled": True, "port": 2222}),
        "jupyter.port",
        "collides with ssh.port",
        id="jupyter-vs-ssh",
    ),
    pytest.param(
        mutated("hosts.0.gpus", -1), "hosts[0].gpus", "greater than or equal to 0", id="negative-gpus"
    ),
    pytest.param(
        mutated("training", {"nproc_per_node": "many"}),
        "training.nproc_per_node",
        "must be 'auto'",
        id="bad-nproc",
    ),
    pytest.param(
        mutated("hosts.0.docker_ssh", "10.0.0.1"), "hosts[0].docker_ssh", "user@host", id="bad-docker-ssh"
    ),
    pytest.param(mutated("network.fabric", "omnipath"), "network.fabric", "infiniband", id="bad-fabric"),
    pytest.param(mutated("hosts", []), "hosts", "at least 1", id="no-hosts"),
    pytest.param(mutated("name", "Bad Name"), "name", "not a valid cluster name", id="bad-cluster-name"),
]


@pytest.mark.parametrize(("data", "path", "message"), INVALID)
def test_invalid_spec_names_the_field(data: dict[str, Any], path: str, message: str) -> None:
    issues = issues_of(data)
    assert any(p == path and message in m for p, m in issues), issues


def test_all_issues_are_reported_at_once() -> None:
    data = mutated("hosts.1.address", "10.99.0.1")
    data["ssh"]["port"] = 29400
    paths = {path for path, _ in issues_of(data)}
    assert {"hosts[1].address", "network.rdzv_port"} <= paths


def test_public_ssh_needs_the_loud_opt_in() -> None:
    data = mutated("ssh.admin_cidrs", ["0.0.0.0/0"])
    data["ssh"]["expose_ssh_to_the_internet"] = True
    spec = parse_spec(data)
    assert any("whole internet" in w for w in spec_warnings(spec))


@pytest.mark.parametrize("key", [ED25519, ECDSA, RSA_3072], ids=["ed25519", "ecdsa", "rsa-3072"])
def test_good_public_keys_are_accepted(key: str) -> None:
    assert parse_spec(mutated("ssh.authorized_keys", [key])).ssh.authorized_keys == [key]


def test_missing_digest_is_a_warning_not_an_error() -> None:
    data = valid_spec()
    del data["image"]["digest"]
    spec = parse_spec(data)
    assert spec.image.reference == "registry.example.com/ml/train:latest"
    assert any("image.digest" in w for w in spec_warnings(spec))


def test_pinned_image_reference_uses_the_digest() -> None:
    assert parse_spec(valid_spec()).image.reference == "registry.example.com/ml/train@sha256:" + "a" * 64


def test_numeric_nccl_values_become_strings() -> None:
    spec = parse_spec(mutated("nccl", {"NCCL_IB_TIMEOUT": 22, "NCCL_IB_PCI_RELAXED_ORDERING": True}))
    assert spec.nccl == {"NCCL_IB_TIMEOUT": "22", "NCCL_IB_PCI_RELAXED_ORDERING": "1"}


def test_bare_address_in_admin_cidrs_is_a_single_host() -> None:
    assert parse_spec(mutated("ssh.admin_cidrs", ["10.20.0.7"])).ssh.admin_cidrs == ["10.20.0.7/32"]


def test_pulumi_hosts_without_host_key_are_warned_about() -> None:
    warnings = spec_warnings(parse_spec(valid_spec()))
    assert any("hosts without host_key (gpu-0, gpu-1)" in w for w in warnings)
    data = valid_spec()
    data["provisioner"] = "local"
    assert not any("host_key" in w for w in spec_warnings(parse_spec(data)))


def test_a_host_hca_that_is_reserved_is_refused() -> None:
    data = mutated("network.reserved_hcas", ["mlx5_8"])
    data["hosts"][0]["hcas"] = ["mlx5_0", "mlx5_8"]
    assert (
        "hosts[0].hcas",
        "host 'gpu-0' lists mlx5_8, which network.reserved_hcas keeps away from NCCL; "
        "remove it from one of the two",
    ) in issues_of(data)


@pytest.mark.parametrize(
    ("text", "user", "host", "port"),
    [
        pytest.param("ops@10.0.0.1", "ops", "10.0.0.1", None, id="no-port"),
        pytest.param("ops@gpu.example.com:2200", "ops", "gpu.example.com", 2200, id="name-and-port"),
        pytest.param("ops@[fd00::5]:22", "ops", "fd00::5", 22, id="ipv6"),
    ],
)
def test_docker_ssh_is_parsed_once_and_written_back_as_given(
    text: str, user: str, host: str, port: int | None
) -> None:
    spec = parse_spec(mutated("hosts.0.docker_ssh", text))
    login = spec.hosts[0].docker_ssh
    assert login is not None and (login.user, login.host, login.port) == (user, host, port)
    assert spec.model_dump()["hosts"][0]["docker_ssh"] == text
    assert parse_spec(spec.model_dump()) == spec


@pytest.mark.timeout(60)
def test_many_nas_shares_are_checked_without_a_pairwise_scan() -> None:
    shares = [
        {"name": f"s{i}", "server": "10.10.0.250", "export": f"/export/{i}", "mount": f"/m{i}"}
        for i in range(20_000)
    ]
    shares.append({"name": "inner", "server": "10.10.0.250", "export": "/export/x", "mount": "/m7/inner"})
    issues = issues_of({**valid_spec(), "nas": shares})
    assert issues == [
        ("nas[20000].mount", "/m7/inner is nested with /m7 (nas[7]); give each share its own top-level path")
    ]


def test_local_runtime_applies_only_to_local_stacks() -> None:
    data = valid_spec()
    data["local"] = {"runtime": "process"}
    with pytest.raises(SpecError, match="local: applies only to provisioner: local"):
        parse_spec(data)
    data["provisioner"] = "local"
    assert parse_spec(data).local.runtime == "process"
    assert parse_spec(valid_spec()).local.runtime == "docker"
