"""Checks on OpenSSH public key lines (the ``authorized_keys`` format).

The key data is read by ``cryptography`` (``load_ssh_public_key``): key type,
key material, and for RSA the modulus size. Nothing here needs ssh-keygen, so
validation works anywhere.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import SSHPublicKeyTypes, load_ssh_public_key

from gpufleet.errors import shown

MIN_RSA_BITS = 3072

ACCEPTED_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "sk-ssh-ed25519@openssh.com",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-rsa",
    }
)
REFUSED_KEY_TYPES = {
    "ssh-dss": "DSA keys are broken and refused by OpenSSH >= 9.8; use ssh-ed25519 (ssh-keygen -t ed25519)",
}


def _load(key_type: str, encoded: str) -> SSHPublicKeyTypes | None:
    try:
        return load_ssh_public_key(f"{key_type} {encoded}".encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        return None


def _actual_type(encoded: str) -> str | None:
    """The accepted type the key data really is, when it is not the one the line names."""
    return next((other for other in sorted(ACCEPTED_KEY_TYPES) if _load(other, encoded)), None)


def check_public_key_line(line: str) -> str | None:
    """Return what is wrong with one ``authorized_keys`` line, or None if it is fine.

    The line is ``<type> <base64> [comment]``; option prefixes such as
    ``from="..."`` are not accepted: restrict sources with ``ssh.admin_cidrs``.
    """
    text = line.strip()
    if "PRIVATE KEY" in text or text.startswith("-----BEGIN"):
        return (
            "this is a PRIVATE key: never put it in a spec; paste the matching public "
            "key (the .pub file) and revoke this one if it was shared"
        )
    fields = text.split()
    if len(fields) < 2:
        return "not an OpenSSH public key line (expected '<type> <base64> [comment]')"
    key_type, encoded = fields[0], fields[1]
    if key_type in REFUSED_KEY_TYPES:
        return REFUSED_KEY_TYPES[key_type]
    if key_type not in ACCEPTED_KEY_TYPES:
        return (
            f"not an OpenSSH public key line: unknown key type {shown(key_type, 40)} "
            f"(accepted: {', '.join(sorted(ACCEPTED_KEY_TYPES))})"
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return f"the {key_type} key data is not valid base64 key material"
    key = _load(key_type, encoded)
    if key is None:
        actual = _actual_type(encoded)
        if actual is not None:
            return f"the key data is a {actual!r} key, not {key_type}"
        if blob.startswith(len(key_type).to_bytes(4, "big") + key_type.encode()):
            return f"the {key_type} key data is truncated or damaged: paste the whole line of the .pub file"
        return f"the {key_type} key data is not valid base64 key material"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return (
            f"RSA key of {key.key_size} bits is too weak (minimum {MIN_RSA_BITS}); "
            "use ssh-ed25519 or ssh-keygen -t rsa -b 4096"
        )
    return None
