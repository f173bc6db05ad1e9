"""How the Pulumi runner reaches a host's own sshd: pure, no resources.

Both the Docker provider (the system ``ssh`` via ``ssh_opts``) and the firewall
command (pulumi-command's Go SSH client) pin the host key from the spec; no
path ever trusts a key on first use, and none uses StrictHostKeyChecking=no.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpufleet.errors import SpecIssue
from gpufleet.spec.models import ClusterSpec, HostSpec

_DOCKER_SSH = re.compile(r"^(?P<user>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+)(:(?P<port>\d+))?$")
SSH_CONNECT_TIMEOUT_S = 15


@dataclass(frozen=True)
class SshTarget:
    """One host's sshd as the runner sees it."""

    user: str
    host: str  # an address or name, IPv6 without brackets
    port: int
    host_key: str  # '<type> <base64>'

    @property
    def docker_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"

    @property
    def needs_sudo(self) -> bool:
        return self.user != "root"


def missing_pulumi_fields(spec: ClusterSpec) -> list[SpecIssue]:
    """What the spec allows but the Pulumi program cannot do without."""
    issues = []
    if spec.network.fabric == "auto":
        # Without probed facts the container would get no /dev/infiniband and NCCL would
        # silently fall back to TCP on an RDMA fabric.
        issues.append(
            SpecIssue(
                "network.fabric",
                "is 'auto', but 'pulumi up' has no probed host facts to decide from: name the "
                "fabric (infiniband, roce or ethernet); 'gpufleet lint --facts DIR' tells which",
            )
        )
    return issues + [
        SpecIssue(
            f"hosts[{index}].host_key",
            f"host {host.name!r}: is required to stand the host up with Pulumi: add the host's "
            "own sshd key (the content of /etc/ssh/ssh_host_ed25519_key.pub on the host, "
            "checked out of band) so the runner never trusts a key on first use",
        )
        for index, host in enumerate(spec.hosts)
        if not host.host_key
    ]


def ssh_target(spec: ClusterSpec, host: HostSpec) -> SshTarget:
    """hosts[].docker_ssh, or <ssh.user>@<ssh_address>:<ssh.host_port> by default."""
    if not host.host_key:
        raise ValueError(f"host {host.name!r} has no host_key (see missing_pulumi_fields)")
    user, address, port = spec.ssh.user, host.reach_address, spec.ssh.host_port
    if host.docker_ssh:
        match = _DOCKER_SSH.match(host.docker_ssh)
        if match is None:  # the spec validated it already; this is a programming error
            raise ValueError(f"unparsable docker_ssh {host.docker_ssh!r}")
        user, address = match["user"], match["host"].strip("[]")
        port = int(match["port"]) if match["port"] else port
    return SshTarget(user=user, host=address, port=port, host_key=host.host_key)


def docker_ssh_opts(target: SshTarget, identity_file: str) -> list[str]:
    """``ssh_opts`` for pulumi-docker's Provider: pin the host key, name the key file.

    The pinned key comes from KnownHostsCommand (OpenSSH >= 8.5), so no
    known_hosts file has to be written on the runner; the user's own
    known_hosts files are not read, so a stale or TOFU entry cannot override it.
    """
    key_type = target.host_key.split()[0]
    # An RSA key signs with rsa-sha2-*: "ssh-rsa" as an algorithm is SHA-1, which
    # OpenSSH >= 8.8 servers no longer offer.
    algorithms = {"ssh-rsa": "rsa-sha2-512,rsa-sha2-256"}.get(key_type, key_type)
    options = {
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": "/dev/null",
        "GlobalKnownHostsFile": "/dev/null",
        "KnownHostsCommand": f"/bin/echo %H {target.host_key}",
        "HostKeyAlgorithms": algorithms,
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "IdentitiesOnly": "yes",
        "BatchMode": "yes",
        "ConnectTimeout": str(SSH_CONNECT_TIMEOUT_S),
    }
    opts = ["-i", identity_file]
    for keyword, value in options.items():
        opts += ["-o", f"{keyword}={value}"]
    return opts
