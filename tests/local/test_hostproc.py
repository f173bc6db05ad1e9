"""A local host's start script (pure)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpufleet.derive.sshd import SSHD_CONFIG_PATH
from gpufleet.local import hostproc
from gpufleet.local.hostproc import host_paths, start_argv, start_script
from tests.conftest import stack_spec


def _script(state: Path = Path("/state")) -> list[str]:
    spec = stack_spec("local")
    return start_script(spec, spec.hosts[0], host_paths(state, "node-0"), state).splitlines()


def test_script_applies_the_firewall_before_sshd_starts() -> None:
    lines = _script()
    assert lines[0] == "nft -f /state/hosts/node-0/nftables.conf"
    assert lines[-1] == f"exec /usr/sbin/sshd -D -e -f {SSHD_CONFIG_PATH}"


def test_etc_is_overlaid_with_the_hosts_folder() -> None:
    assert (
        "mount -t overlay gpufleet-etc -o "
        "lowerdir=/etc,upperdir=/state/hosts/node-0/etc,workdir=/state/hosts/node-0/etc-work /etc"
    ) in _script()


def test_nas_shares_are_bind_mounted_and_read_only_ones_remounted() -> None:
    lines = _script(Path("/project/.gpufleet/local"))
    # Beside the state folder, not in it: down removes the state folder, never the NAS data.
    assert "mount --bind /project/.gpufleet/_nas/local/data /data" in lines
    assert "mount -o remount,bind,ro /data" in lines
    assert "mount --bind /project/.gpufleet/_nas/local/checkpoints /checkpoints" in lines
    assert "mount -o remount,bind,ro /checkpoints" not in lines


def test_hostname_is_the_host_name() -> None:
    assert "hostname node-0" in _script()


def test_paths_with_spaces_are_quoted() -> None:
    lines = _script(Path("/my state"))
    assert "nft -f '/my state/hosts/node-0/nftables.conf'" in lines


def test_argv_enters_the_namespace_then_private_mount_and_uts() -> None:
    argv = start_argv("gpufleet-local-node-0", "true")
    assert argv[:4] == ["ip", "netns", "exec", "gpufleet-local-node-0"]
    assert argv[4:9] == ["unshare", "--mount", "--uts", "--propagation", "private"]
    assert argv[-3:] == ["sh", "-ec", "true"]


def test_memlock_follows_the_container_spec() -> None:
    assert "ulimit -l unlimited 2>/dev/null || :" in _script()
    spec = stack_spec("local").model_copy(
        update={"container": stack_spec("local").container.model_copy(update={"memlock_unlimited": False})}
    )
    state = Path("/state")
    assert "ulimit -l unlimited" not in start_script(spec, spec.hosts[0], host_paths(state, "node-0"), state)


def test_a_reaped_child_is_killed_only_after_the_namespace_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """poll() reaps: the pid may then be recycled, so it is no longer killed unchecked."""
    killed: list[int] = []
    monkeypatch.setattr(hostproc.os, "killpg", lambda pid, sig: killed.append(pid))
    process = subprocess.Popen(["true"])
    monkeypatch.setitem(hostproc._started, process.pid, process)
    process.wait()
    assert hostproc.host_exited(process.pid)
    hostproc.kill_group(process.pid, None)
    assert killed == []
    running = subprocess.Popen(["sleep", "5"])
    monkeypatch.setitem(hostproc._started, running.pid, running)
    try:
        hostproc.kill_group(running.pid, None)  # not reaped yet: killed without the check
        assert killed == [running.pid]
    finally:
        running.kill()
        running.wait()
