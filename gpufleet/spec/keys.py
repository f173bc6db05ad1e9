"""Checks on OpenSSH public key lines (the ``authorized_keys`` format).

Only the wire format is parsed: key type, base64 blob, and for RSA the modulus
size. Nothing here needs ssh-keygen, so validation works anywhere.
"""

from __future__ import annotations

import base64
import binascii
import struct

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


def _read_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise ValueError("truncated key data")
    (length,) = struct.unpack(">I", blob[offset : offset + 4])
    end = offset + 4 + length
    if end > len(blob):
        raise ValueError("truncated key data")
    return blob[offset + 4 : end], end


def _rsa_bits(blob: bytes) -> int:
    _, offset = _read_string(blob, 0)  # key type
    _, offset = _read_string(blob, offset)  # public exponent
    modulus, _ = _read_string(blob, offset)
    return int.from_bytes(modulus, "big").bit_length()


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
            f"not an OpenSSH public key line: unknown key type {key_type!r} "
            f"(accepted: {', '.join(sorted(ACCEPTED_KEY_TYPES))})"
        )
    try:
        blob = base64.b64decode(encoded, validate=True)
        embedded_type, _ = _read_string(blob, 0)
    except (binascii.Error, ValueError):
        return f"the {key_type} key data is not valid base64 key material"
    if embedded_type.decode("ascii", "replace") != key_type:
        return f"the key data is a {embedded_type.decode('ascii', 'replace')!r} key, not {key_type}"
    if key_type == "ssh-rsa":
        try:
            bits = _rsa_bits(blob)
        except ValueError:
            return "the ssh-rsa key data is truncated"
        if bits < MIN_RSA_BITS:
            return (
                f"RSA key of {bits} bits is too weak (minimum {MIN_RSA_BITS}); "
                "use ssh-ed25519 or ssh-keygen -t rsa -b 4096"
            )
    return None
