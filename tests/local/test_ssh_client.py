"""`gpufleet ssh`'s argv against a real host, and a NAS share mounted under /home. Root only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gpufleet.cli.cluster_commands import ssh_argv
from gpufleet.inventory import KEY_FILE, KNOWN_HOSTS_FILE, state_dir
from gpufleet.local import cluster_down, cluster_up, hostproc
from gpufleet.spec import load_spec
from tests.conftest import needs_root
from tests.local.cluster import cluster_config, write_stack

pytestmark = [needs_root("ip", "sshd", "nft", "unshare", "ssh"), pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V test"


def test_ssh_with_an_odd_state_path_and_a_nas_share_under_home(tmp_path: Path) -> None:
    top = Path(f"/home/gpufleet-test-{tmp_path.name}")
    config = cluster_config("lt-sshc", 238, hosts=1, nproc=1, nas=True, user_key=KEY)
    config["nas"][1]["mount"] = str(top / "ckpt")  # under /home: hidden by the private /home bind
    spec = load_spec(write_stack(tmp_path, config))
    assert not top.exists()
    try:
        inventory = cluster_up(spec, tmp_path)
        assert not top.exists(), "the machine's /home got a mount point that no host can see"
        # A state folder whose path has a space, '%' and a quote: ssh must still find the files.
        odd = tmp_path / 'state a b%d "q'
        odd.mkdir()
        for name in (KEY_FILE, KNOWN_HOSTS_FILE):
            shutil.copy2(state_dir(tmp_path, spec.name) / name, odd / name)
        argv = ssh_argv(inventory.hosts[0], odd, ["hostname", "&&", "touch", str(top / "ckpt" / "from-host")])
        assert argv[1:3] == ["-F", "/dev/null"]  # no ~/.ssh/config, no /etc/ssh/ssh_config
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["node-0"]
        assert (hostproc.nas_source(state_dir(tmp_path, spec.name), "checkpoints") / "from-host").is_file()
    finally:
        cluster_down(spec, tmp_path)
    assert not top.exists()
