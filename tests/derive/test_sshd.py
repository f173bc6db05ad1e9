"""sshd hardening written as tests: each rule is a line an auditor would check."""

from __future__ import annotations

import paramiko
import pytest

from gpufleet.derive.sshd import authorized_keys, sshd_settings
from gpufleet.spec import parse_spec
from tests.spec.public_keys import ECDSA, ED25519
from tests.spec.test_models import mutated, valid_spec


def settings(**changes: object) -> dict[str, str]:
    data = valid_spec()
    for path, value in changes.items():
        data = mutated(path.replace("__", "."), value) if "__" in path else {**data, path: value}
    pairs = sshd_settings(parse_spec(data))
    keywords = [k for k, _ in pairs]
    assert len(keywords) == len(set(keywords)), "sshd uses the first value: no keyword twice"
    return dict(pairs)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("AuthenticationMethods", "publickey"),
        ("PermitEmptyPasswords", "no"),
        ("PermitRootLogin", "no"),
        ("HostbasedAuthentication", "no"),
        ("X11Forwarding", "no"),
        ("AllowAgentForwarding", "no"),
        ("AllowTcpForwarding", "no"),
        ("PermitUserEnvironment", "no"),
        ("PermitTunnel", "no"),
        ("GatewayPorts", "no"),
        ("StrictModes", "yes"),
        ("AllowUsers", "trainer"),
    ],
)
def test_hardening_rule(keyword: str, value: str) -> None:
    assert settings()[keyword] == value


def test_auth_tries_and_grace_time_are_low() -> None:
    config = settings()
    assert int(config["MaxAuthTries"]) <= 4
    assert int(config["LoginGraceTime"]) <= 60


def test_jupyter_enables_only_local_forwarding() -> None:
    assert settings(jupyter={"enabled": True})["AllowTcpForwarding"] == "local"


def test_algorithms_intersect_paramikos() -> None:
    """Fabric (paramiko) must be able to connect to what we render."""
    config = settings()
    preferred = (
        paramiko.Transport._preferred_kex,
        paramiko.Transport._preferred_ciphers,
        paramiko.Transport._preferred_macs,
    )
    for keyword, theirs in zip(("KexAlgorithms", "Ciphers", "MACs"), preferred, strict=True):
        assert set(config[keyword].split(",")) & set(theirs), keyword
    assert set(config["HostKeyAlgorithms"].split(",")) & set(paramiko.Transport._preferred_keys)


def test_no_weak_algorithms() -> None:
    config = settings()
    algorithms = ",".join(config[k] for k in ("KexAlgorithms", "Ciphers", "MACs", "HostKeyAlgorithms"))
    for weak in (
        "sha1",
        "cbc",
        "md5",
        "ssh-rsa,",
        "ssh-dss",
        "group1-",
        "group14-",
        "3des",
        "arcfour",
        "nistp",
    ):
        assert weak not in algorithms + ",", weak
    assert config["RequiredRSASize"] == "3072"


def test_authorized_keys_adds_extra_keys_without_duplicates() -> None:
    spec = parse_spec(mutated("ssh.authorized_keys", [ED25519, ECDSA]))
    text = authorized_keys(spec, extra_keys=(ED25519, "ssh-ed25519 AAAAcontroller gpufleet"))
    assert text.splitlines() == [ED25519, ECDSA, "ssh-ed25519 AAAAcontroller gpufleet"]
