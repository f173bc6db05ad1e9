"""`down` keeps the NAS data (the user's checkpoints and logs) in every runtime; `down --purge`
removes it. Root only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpufleet.cli.cluster_commands import ssh_argv
from gpufleet.inventory import state_dir
from gpufleet.local import cluster_down, cluster_up, hostproc
from gpufleet.spec import load_spec
from tests.conftest import needs_root
from tests.local.cluster import cluster_config, write_stack

pytestmark = [needs_root("ip", "sshd", "nft", "unshare"), pytest.mark.slow, pytest.mark.timeout(900)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V test"


@pytest.mark.parametrize(("runtime", "octet"), [("process", 242), ("docker", 243)], ids=["process", "docker"])
def test_down_keeps_nas_data_up_finds_it_and_purge_removes_it(
    tmp_path: Path, runtime: str, octet: int
) -> None:
    spec = load_spec(
        write_stack(tmp_path, cluster_config(f"lt-nas-{runtime[0]}", octet, 1, 1, True, KEY, runtime))
    )
    folder = state_dir(tmp_path, spec.name)
    checkpoints = hostproc.nas_source(folder, "checkpoints")
    try:
        inventory = cluster_up(spec, tmp_path)
        host = inventory.hosts[0]
        write = ssh_argv(host, folder, ["echo epoch-3 > /checkpoints/ckpt.txt"])
        assert subprocess.run(write, capture_output=True, check=False, timeout=60).returncode == 0
        cluster_down(spec, tmp_path)
        assert not folder.exists()
        assert (checkpoints / "ckpt.txt").read_text() == "epoch-3\n"
        inventory = cluster_up(spec, tmp_path)
        read = ssh_argv(inventory.hosts[0], folder, ["cat /checkpoints/ckpt.txt"])
        assert (
            subprocess.run(read, capture_output=True, text=True, check=False, timeout=60).stdout
            == "epoch-3\n"
        )
        cluster_down(spec, tmp_path, purge=True)
        assert not checkpoints.exists()
    finally:
        cluster_down(spec, tmp_path, purge=True)
