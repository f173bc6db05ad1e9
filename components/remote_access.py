"""How the Pulumi runner reaches a host's own sshd: pure, no resources.

Both the Docker provider (the system ``ssh`` via ``ssh_opts``) and the firewall
command (pulumi-command's Go SSH client) pin the host key from the spec; no
path ever trusts a key on first use, and none uses StrictHostKeyChecking=no.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from gpufleet.derive.container import PEERS_FILE
from gpufleet.spec.models import ClusterSpec, HostSpec

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


def ssh_target(spec: ClusterSpec, host: HostSpec) -> SshTarget:
    """hosts[].docker_ssh, or <ssh.user>@<ssh_address>:<ssh.host_port> by default."""
    if not host.host_key:
        raise ValueError(f"host {host.name!r} has no host_key (see gpufleet.spec.pulumi_requirements)")
    login = host.docker_ssh  # parsed by the spec (gpufleet.spec.models.SshLogin)
    if login is None:
        return SshTarget(spec.ssh.user, host.reach_address, spec.ssh.host_port, host.host_key)
    port = login.port if login.port is not None else spec.ssh.host_port
    return SshTarget(user=login.user, host=login.host, port=port, host_key=host.host_key)


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


def write_peers_script(folder: str, sudo: bool) -> str:
    """Reads the peers file on stdin and puts it in ``folder`` atomically (the container mounts the
    folder, so it sees the new file; a half-written one never)."""
    run = "sudo -n " if sudo else ""
    target = shlex.quote(folder)
    return (
        f"set -eu; {run}install -d -m 0755 {target}; f=$({run}mktemp {target}/.hosts.XXXXXX); "
        f'{run}tee "$f" >/dev/null; {run}chmod 0644 "$f"; {run}mv "$f" {target}/{PEERS_FILE}'
    )
