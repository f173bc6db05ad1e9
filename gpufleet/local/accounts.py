"""The login user and name resolution of a local host (pure text functions).

The user is never added to this machine's own /etc/passwd: each host sees
private copies of passwd, group and shadow with the user appended, and a
private /etc/hosts where every host name resolves to its address.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.spec.models import ClusterSpec, HostSpec

FIRST_UID = 1000
LAST_UID = 59999
SHELL = "/bin/bash"


@dataclass(frozen=True)
class LoginAccount:
    user: str
    uid: int
    gid: int
    home: str

    def passwd_line(self) -> str:
        return f"{self.user}:x:{self.uid}:{self.gid}:gpufleet login user:{self.home}:{SHELL}\n"

    def group_line(self) -> str:
        return f"{self.user}:x:{self.gid}:\n"

    def shadow_line(self) -> str:
        # '*': no password can match, yet the account is not locked. sshd with
        # UsePAM no refuses even key logins for a locked ('!') account.
        return f"{self.user}:*:19000:0:99999:7:::\n"


def _ids(text: str, field: int) -> set[int]:
    ids = set()
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > field and parts[field].isdigit():
            ids.add(int(parts[field]))
    return ids


def _names(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def choose_account(user: str, passwd: str, group: str) -> LoginAccount:
    """A uid and gid (the same number) that this machine does not use yet."""
    if user in _names(passwd) or user in _names(group):
        raise ValueError(
            f"the login user {user!r} already exists on this machine; a local cluster adds its own "
            "user to each host's private passwd: pick another ssh.user"
        )
    used = _ids(passwd, 2) | _ids(passwd, 3) | _ids(group, 2)
    for uid in range(FIRST_UID, LAST_UID + 1):
        if uid not in used:
            return LoginAccount(user=user, uid=uid, gid=uid, home=f"/home/{user}")
    raise ValueError(f"no free uid between {FIRST_UID} and {LAST_UID}")


def _append(text: str, line: str) -> str:
    return text + ("" if not text or text.endswith("\n") else "\n") + line


def with_account(passwd: str, group: str, shadow: str, account: LoginAccount) -> tuple[str, str, str]:
    """passwd, group and shadow with the account appended."""
    return (
        _append(passwd, account.passwd_line()),
        _append(group, account.group_line()),
        _append(shadow, account.shadow_line()),
    )


def hosts_file(spec: ClusterSpec, host: HostSpec) -> str:
    """The host's /etc/hosts: its own name first (torch c10d resolves gethostname()), then its peers."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{host.address}\t{host.name}")
    lines += [f"{peer.address}\t{peer.name}" for peer in spec.hosts if peer.name != host.name]
    return "\n".join(lines) + "\n"
