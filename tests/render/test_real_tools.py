"""Every rendered artifact is checked by the real tool that will consume it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpufleet.render import render_cluster, write_tree
from tests.conftest import SHIPPED_STACKS, needs_root, stack_spec


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("hostkey") / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def rendered_hosts(tmp_path: Path, stack: str) -> list[Path]:
    spec = stack_spec(stack)
    write_tree(render_cluster(spec), tmp_path)
    return [tmp_path / "hosts" / host.name for host in spec.hosts]


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.mark.skipif(
    shutil.which("sshd", path="/usr/sbin:/usr/bin") is None, reason="needs openssh-server (make setup)"
)
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_sshd_accepts_the_config_and_enforces_key_only(tmp_path: Path, stack: str, host_key: Path) -> None:
    sshd = shutil.which("sshd", path="/usr/sbin:/usr/bin")
    assert sshd
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -t insists on its privsep dir
    for folder in rendered_hosts(tmp_path, stack):
        config = folder / "sshd_config"
        checked = run([sshd, "-t", "-f", str(config), "-h", str(host_key)])
        assert checked.returncode == 0, checked.stderr
        # sshd's own view of the effective settings for a login by the spec's user.
        effective = run(
            [sshd, "-T", "-f", str(config), "-h", str(host_key), "-C", "user=trainer,host=x,addr=10.20.0.5"]
        )
        assert effective.returncode == 0, effective.stderr
        settings = dict(line.split(" ", 1) for line in effective.stdout.splitlines() if " " in line)
        assert settings["passwordauthentication"] == "no"
        assert settings["kbdinteractiveauthentication"] == "no"
        assert settings["authenticationmethods"] == "publickey"
        assert settings["permitrootlogin"] == "no"
        assert settings["allowagentforwarding"] == "no"


@needs_root("nft", "unshare")
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_nft_accepts_the_firewall(tmp_path: Path, stack: str) -> None:
    for folder in rendered_hosts(tmp_path, stack):
        # A throwaway network namespace: checking never touches this machine's rules.
        checked = run(["unshare", "--net", "nft", "-c", "-f", str(folder / "nftables.conf")])
        assert checked.returncode == 0, checked.stderr


@needs_root("nft", "unshare")
def test_firewall_applies_twice_and_leaves_other_tables(tmp_path: Path) -> None:
    folder = rendered_hosts(tmp_path, "example-ib")[0]
    script = (
        "set -e; nft add table inet other; "
        f"nft -f {folder / 'nftables.conf'}; nft -f {folder / 'nftables.conf'}; nft list tables"
    )
    applied = run(["unshare", "--net", "sh", "-c", script])
    assert applied.returncode == 0, applied.stderr
    assert sorted(applied.stdout.split("\n")[:-1]) == ["table inet gpufleet", "table inet other"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose (make setup)")
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_docker_compose_accepts_the_service(tmp_path: Path, stack: str) -> None:
    for folder in rendered_hosts(tmp_path, stack):
        checked = run(
            ["docker-compose", "-f", str(folder / "docker-compose.yml"), "config", "-q"], cwd=folder
        )
        assert checked.returncode == 0, checked.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose (make setup)")
def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is refused by the real tool."""
    folder = rendered_hosts(tmp_path, "local")[0]
    compose = folder / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("network_mode:", "network_mod:"))
    assert run(["docker-compose", "-f", str(compose), "config", "-q"], cwd=folder).returncode != 0
