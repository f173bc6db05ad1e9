"""Without a writable NAS share, each host keeps its own run folder in its home, with its own copy of the code."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.local.cluster import local_cluster

pytestmark = [needs_root("sshd", "nft", "ip"), pytest.mark.slow, pytest.mark.timeout(180)]

GPUFLEET = str(Path(sys.executable).parent / "gpufleet")
SCRIPT = (
    "import os, socket\n"
    "import torch, torch.distributed as dist\n"
    "dist.init_process_group('gloo')\n"
    "t = torch.ones(1) * (dist.get_rank() + 1)\n"
    "dist.all_reduce(t)\n"
    "print(f'sum={int(t.item())} host={socket.gethostname()} cwd={os.getcwd()}', flush=True)\n"
    "dist.barrier()\n"
    "dist.destroy_process_group()\n"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("nonas")
    (folder / "Pulumi.yaml").write_text("name: launcher-nonas-test\nruntime: python\n")
    with local_cluster(folder, "t6-nonas", 162, nproc=1, nas=False) as (_, _, stack):
        yield folder, stack


def test_runs_in_each_hosts_home_folder(project: tuple[Path, Path], tmp_path: Path) -> None:
    folder, stack = project
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "allreduce.py").write_text(SCRIPT)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command, rest = args[0], args[1:]
        return subprocess.run(
            [GPUFLEET, command, "-f", str(stack), *rest],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )

    result = cli("train", "--name", "home-1", str(tmp_path / "job" / "allreduce.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on each host" in result.stdout
    # 2 ranks: 1 + 2; each host ran its own copy of the code under its own home.
    for host in ("node-0", "node-1"):
        match = re.search(
            rf"^{host} +\| \[rank\d\]:sum=3 host={host} cwd=(\S+)$", result.stdout, re.MULTILINE
        )
        assert match, result.stdout
        assert match.group(1).endswith("/gpufleet-runs/home-1/code")
    status = cli("status")
    assert re.search(r"home-1.*succeeded", status.stdout), status.stdout
    logs = cli("logs", "home-1")
    assert "host=node-0" in logs.stdout and "host=node-1" in logs.stdout
