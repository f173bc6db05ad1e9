"""authorized_keys lines: only real public keys of accepted types and sizes."""

from __future__ import annotations

import pytest

from gpufleet.spec.keys import check_public_key_line
from tests.spec.public_keys import DSA, ECDSA, ED25519, RSA_2048, RSA_3072, SK_ECDSA, SK_ED25519


@pytest.mark.parametrize(
    "line",
    [ED25519, ECDSA, RSA_3072, ED25519.rsplit(" ", 1)[0], SK_ED25519, SK_ECDSA],
    ids=["ed25519", "ecdsa", "rsa-3072", "no-comment", "sk-ed25519", "sk-ecdsa"],
)
def test_accepted(line: str) -> None:
    assert check_public_key_line(line) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(DSA, "DSA keys", id="dsa"),
        pytest.param(RSA_2048, "2048 bits is too weak", id="rsa-2048"),
        pytest.param("-----BEGIN RSA PRIVATE KEY-----", "PRIVATE key", id="pem-private"),
        pytest.param("-----BEGIN OPENSSH PRIVATE KEY-----", "PRIVATE key", id="openssh-private"),
        pytest.param("ssh-ed25519", "not an OpenSSH public key line", id="no-data"),
        pytest.param("ssh-foo AAAA", "unknown key type", id="unknown-type"),
        pytest.param("ssh-ed25519 not!base64", "not valid base64", id="bad-base64"),
        pytest.param("ssh-ed25519 " + RSA_3072.split()[1], "is a 'ssh-rsa' key", id="type-mismatch"),
        pytest.param("ssh-rsa " + RSA_3072.split()[1][:40], "truncated", id="truncated-rsa"),
        pytest.param('from="10.0.0.1" ' + ED25519, "unknown key type", id="options-prefix"),
        pytest.param(
            "sk-ssh-ed25519@openssh.com " + ED25519.split()[1], "is a 'ssh-ed25519' key", id="sk-mismatch"
        ),
        pytest.param("ssh-ed25519 " + ED25519.split()[1][:-8], "truncated", id="truncated-ed25519"),
    ],
)
def test_refused(line: str, expected: str) -> None:
    problem = check_public_key_line(line)
    assert problem is not None and expected in problem, problem


def test_a_huge_key_type_is_not_echoed_whole() -> None:
    problem = check_public_key_line("x" * 5_000_000 + " AAAA")
    assert problem is not None and len(problem) < 400
