"""`gpufleet up`, `down` and `ssh` as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gpufleet.cli.cluster_commands import ssh_argv
from gpufleet.inventory import InventoryHost
from gpufleet.local.keys import generate_ed25519
from tests.conftest import PROJECT_ROOT, needs_root
from tests.local.cluster import cluster_config, write_stack

GPUFLEET = Path(sys.executable).parent / "gpufleet"


def gpufleet(*args: str, cwd: Path, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        [*prefix, str(GPUFLEET), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_ssh_argv_uses_the_pinned_host_key_and_the_cluster_key() -> None:
    host = InventoryHost(
        name="node-0",
        address="10.0.0.1",
        ssh_address="10.0.0.1",
        ssh_port=2222,
        user="trainer",
        host_key="k x",
    )
    argv = ssh_argv(host, Path("/state"), ["ls", "-l"])
    assert argv[0] == "ssh"
    pairs = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-o"}
    assert {
        'UserKnownHostsFile="/state/known_hosts"',
        'IdentityFile="/state/id_ed25519"',
        "StrictHostKeyChecking=yes",
        "IdentitiesOnly=yes",
        "BatchMode=yes",
    } <= pairs
    assert argv[1:3] == ["-F", "/dev/null"]  # no ~/.ssh/config, no /etc/ssh/ssh_config
    odd = ssh_argv(host, Path('/my %h "x" \\'), [])
    assert 'UserKnownHostsFile="/my %%h \\"x\\" \\\\/known_hosts"' in odd
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "trainer"
    # '--' ends ssh's options: the command's own flags are never read as ssh's.
    assert argv[-4:] == ["--", "10.0.0.1", "ls", "-l"]


@pytest.mark.parametrize(
    ("command", "advice"),
    [pytest.param("up", "pulumi up", id="up"), pytest.param("down", "pulumi destroy", id="down")],
)
def test_a_pulumi_stack_is_left_to_pulumi(command: str, advice: str) -> None:
    result = gpufleet(command, "--stack", "example-ib", cwd=PROJECT_ROOT)
    assert result.returncode == 1
    assert advice in result.stderr
    assert "Traceback" not in result.stderr


@needs_root("setpriv")
def test_up_as_a_normal_user_says_it_needs_root() -> None:
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-nonroot-"))
    try:
        folder.chmod(0o755)
        key = generate_ed25519().public_line("test")
        stack = write_stack(folder, cluster_config("lt-nonroot", 230, 2, 1, False, key))
        stack.chmod(0o644)
        result = gpufleet("up", "-f", str(stack), cwd=folder, user="65534")  # nobody
        assert result.returncode == 1, result.stderr
        assert "needs root" in result.stderr
        assert "Traceback" not in result.stderr
        assert not Path("/run/netns/gpufleet-lt-nonroot-node-0").exists()
    finally:
        shutil.rmtree(folder)


@needs_root("setpriv")
def test_a_root_state_folder_is_a_clear_error_for_a_normal_user() -> None:
    """`up` as root makes .gpufleet/ private: ssh and down as another user say to use root."""
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-nonroot-"))
    try:
        folder.chmod(0o755)
        shutil.copy(PROJECT_ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
        (folder / "Pulumi.yaml").chmod(0o644)
        key = generate_ed25519().public_line("test")
        stack = write_stack(folder, cluster_config("lt-nonroot", 230, 2, 1, False, key))
        stack.chmod(0o644)
        state = folder / ".gpufleet" / "lt-nonroot"
        state.mkdir(parents=True)
        (state / "inventory.json").write_text("{}")
        for path in (folder / ".gpufleet", state):
            path.chmod(0o700)
        result = gpufleet("ssh", "-f", str(stack), "node-0", cwd=folder, user="65534")
        assert result.returncode == 1, result.stderr
        assert "the state folder belongs to root" in result.stderr
        assert "sudo .venv/bin/gpufleet" in result.stderr
        assert "Traceback" not in result.stderr
        result = gpufleet("down", "-f", str(stack), cwd=folder, user="65534")
        assert result.returncode == 1, result.stderr
        assert "needs root" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        shutil.rmtree(folder)


@pytest.mark.slow
@pytest.mark.timeout(120)
@needs_root("ip", "sshd", "nft", "unshare", "ssh")
def test_up_ssh_down(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")  # the state folder goes here
    stack = write_stack(
        tmp_path, cluster_config("lt-cli", 231, 2, 1, True, generate_ed25519().public_line("t"))
    )
    try:
        up = gpufleet("up", "-f", str(stack), cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        assert "cluster lt-cli is up" in up.stdout
        assert "trainer@10.231.0.12:2222" in up.stdout
        assert "inventory: .gpufleet/lt-cli/inventory.json" in up.stdout
        assert os.stat(tmp_path / ".gpufleet" / "lt-cli").st_mode & 0o077 == 0

        again = gpufleet("up", "-f", str(stack), cwd=tmp_path)
        assert again.returncode == 0 and "was already up; nothing changed" in again.stdout

        remote = gpufleet(
            "ssh", "-f", str(stack), "node-1", "--", "hostname", "&&", "ls", "-d", "/data", cwd=tmp_path
        )
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout.split() == ["node-1", "/data"]
        failing = gpufleet("ssh", "-f", str(stack), "node-0", "--", "exit", "7", cwd=tmp_path)
        assert failing.returncode == 7
        unknown = gpufleet("ssh", "-f", str(stack), "node-9", cwd=tmp_path)
        assert unknown.returncode == 2 and "no host 'node-9'" in unknown.stderr

        known_hosts = tmp_path / ".gpufleet" / "lt-cli" / "known_hosts"
        pinned = known_hosts.read_text()
        impostor = generate_ed25519().public_openssh
        known_hosts.write_text("".join(f"{line.split()[0]} {impostor}\n" for line in pinned.splitlines()))
        refused = gpufleet("ssh", "-f", str(stack), "node-0", "--", "true", cwd=tmp_path)
        assert refused.returncode == 255
        assert "host key" in refused.stderr.lower()
        known_hosts.write_text(pinned)
    finally:
        down = gpufleet("down", "-f", str(stack), cwd=tmp_path)
    assert down.returncode == 0 and "cluster lt-cli is down" in down.stdout
    assert not (tmp_path / ".gpufleet" / "lt-cli").exists()
    assert not Path("/run/netns/gpufleet-lt-cli-node-0").exists()
    again = gpufleet("down", "-f", str(stack), cwd=tmp_path)
    assert again.returncode == 0 and "not up" in again.stdout
