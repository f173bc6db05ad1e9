"""sshd_config settings for the training container: key-only and hardened.

The algorithm lists follow ssh-audit's hardening guide for OpenSSH 9.2 (Debian
12), cut to what paramiko also speaks so that Fabric can connect: paramiko has
no sntrup761/mlkem key exchange, hence curve25519 (ssh-audit warns that it is
not post-quantum; kept for that reason).
"""

from __future__ import annotations

from gpufleet.spec.models import ClusterSpec

CONTAINER_SSH_DIR = "/etc/gpufleet/ssh"
SSHD_CONFIG_PATH = f"{CONTAINER_SSH_DIR}/sshd_config"
AUTHORIZED_KEYS_PATH = f"{CONTAINER_SSH_DIR}/authorized_keys"
HOST_KEY_PATH = f"{CONTAINER_SSH_DIR}/ssh_host_ed25519_key"

KEX_ALGORITHMS = (
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
)
CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
)
HOST_KEY_ALGORITHMS = ("ssh-ed25519",)
PUBKEY_ALGORITHMS = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


def sshd_settings(spec: ClusterSpec) -> list[tuple[str, str]]:
    """Ordered ``(keyword, value)`` pairs of the container's sshd_config.

    sshd uses the FIRST value it reads for a keyword, so the order is the policy.
    """
    # Jupyter is reached with `ssh -L`; without it no forwarding at all.
    tcp_forwarding = "local" if spec.jupyter.enabled else "no"
    return [
        ("Port", str(spec.ssh.port)),
        ("AddressFamily", "any"),
        ("HostKey", HOST_KEY_PATH),
        ("PidFile", "none"),
        ("AuthorizedKeysFile", AUTHORIZED_KEYS_PATH),
        ("AllowUsers", spec.ssh.user),
        ("PermitRootLogin", "no"),
        ("AuthenticationMethods", "publickey"),
        ("PubkeyAuthentication", "yes"),
        ("PasswordAuthentication", "no"),
        ("KbdInteractiveAuthentication", "no"),
        ("PermitEmptyPasswords", "no"),
        ("HostbasedAuthentication", "no"),
        ("IgnoreRhosts", "yes"),
        ("GSSAPIAuthentication", "no"),
        ("UsePAM", "no"),
        ("StrictModes", "yes"),
        ("MaxAuthTries", "3"),
        ("MaxSessions", "16"),
        ("MaxStartups", "10:30:60"),
        ("LoginGraceTime", "20"),
        ("ClientAliveInterval", "120"),
        ("ClientAliveCountMax", "3"),
        ("X11Forwarding", "no"),
        ("AllowAgentForwarding", "no"),
        ("AllowTcpForwarding", tcp_forwarding),
        ("AllowStreamLocalForwarding", "no"),
        ("GatewayPorts", "no"),
        ("PermitTunnel", "no"),
        ("PermitUserEnvironment", "no"),
        ("PermitUserRC", "no"),
        ("UseDNS", "no"),
        ("Compression", "no"),
        ("PrintMotd", "no"),
        ("LogLevel", "VERBOSE"),
        ("KexAlgorithms", ",".join(KEX_ALGORITHMS)),
        ("Ciphers", ",".join(CIPHERS)),
        ("MACs", ",".join(MACS)),
        ("HostKeyAlgorithms", ",".join(HOST_KEY_ALGORITHMS)),
        ("PubkeyAcceptedAlgorithms", ",".join(PUBKEY_ALGORITHMS)),
        ("RequiredRSASize", "3072"),
        ("Subsystem", "sftp internal-sftp"),
    ]


def authorized_keys(spec: ClusterSpec, extra_keys: tuple[str, ...] = ()) -> str:
    """The authorized_keys file: the spec's keys plus e.g. the cluster controller's key."""
    lines = [line.strip() for line in (*spec.ssh.authorized_keys, *extra_keys)]
    return "".join(f"{line}\n" for line in dict.fromkeys(lines))
