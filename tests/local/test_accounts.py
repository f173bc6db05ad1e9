"""The login account and /etc/hosts of a local host (pure)."""

from __future__ import annotations

import pytest

from gpufleet.local.accounts import FIRST_UID, choose_account, hosts_file, with_account
from tests.conftest import stack_spec

PASSWD = "root:x:0:0:root:/root:/bin/bash\nsshd:x:102:65534::/run/sshd:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nshadow:x:42:\n"
SHADOW = "root:*:19000:0:99999:7:::\n"


@pytest.mark.parametrize(
    ("passwd", "group", "expected"),
    [
        pytest.param(PASSWD, GROUP, FIRST_UID, id="first-free"),
        pytest.param(PASSWD + "alice:x:1000:1000::/home/alice:/bin/sh\n", GROUP, 1001, id="uid-taken"),
        pytest.param(PASSWD, GROUP + "devs:x:1000:\n", 1001, id="gid-taken"),
        pytest.param(PASSWD + "bob:x:1001:1000::/:/bin/sh\n", GROUP, 1002, id="primary-gid-taken"),
    ],
)
def test_choose_account_takes_a_free_id(passwd: str, group: str, expected: int) -> None:
    account = choose_account("trainer", passwd, group)
    assert (account.uid, account.gid, account.home) == (expected, expected, "/home/trainer")


def test_an_existing_user_is_refused() -> None:
    with pytest.raises(ValueError, match="already exists on this machine"):
        choose_account("sshd", PASSWD, GROUP)


def test_account_lines_are_appended() -> None:
    account = choose_account("trainer", PASSWD, GROUP)
    passwd, group, shadow = with_account(PASSWD, GROUP, SHADOW.rstrip("\n"), account)
    assert passwd == PASSWD + "trainer:x:1000:1000:gpufleet login user:/home/trainer:/bin/bash\n"
    assert group.endswith("\ntrainer:x:1000:\n")
    assert shadow.splitlines()[0] == SHADOW.rstrip("\n")


def test_shadow_entry_is_unusable_but_not_locked() -> None:
    # sshd with UsePAM no refuses key logins for '!' (locked); '*' matches no password.
    account = choose_account("trainer", PASSWD, GROUP)
    password_field = account.shadow_line().split(":")[1]
    assert password_field == "*"


def test_hosts_file_resolves_own_name_first_and_every_peer() -> None:
    spec = stack_spec("local")
    text = hosts_file(spec, spec.hosts[1])
    lines = text.splitlines()
    assert "10.77.0.12\tnode-1" in lines
    assert "10.77.0.11\tnode-0" in lines
    assert lines.index("10.77.0.12\tnode-1") < lines.index("10.77.0.11\tnode-0")
    assert not [line for line in lines if line.startswith("127.") and "node-1" in line]
