"""An image from the cache into a host's own daemon, once."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.local import dockerd, images
from tests.local.images.conftest import quiet, real


@pytest.fixture
def fresh_daemon() -> Iterator[dockerd.Daemon]:
    """A host-like daemon with an empty data-root (removed after)."""
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-test-"))
    paths = dockerd.DaemonPaths(data_root=folder / "data", run_dir=folder / "run")
    daemon = dockerd.start(paths)
    try:
        dockerd.wait_ready(daemon, "test daemon")
        yield daemon
    finally:
        dockerd.stop(daemon.pid, paths)
        dockerd.unmount_below(folder)
        shutil.rmtree(folder, ignore_errors=True)


@real
def test_load_into_a_fresh_daemon_then_cached(
    built: tuple[images.LocalImage, list[images.BuildStep]], fresh_daemon: dockerd.Daemon
) -> None:
    image, _ = built
    step = images.load_into(image, fresh_daemon, "node-x", quiet)
    assert (step.name, step.cached) == ("load node-x", False)
    argv = fresh_daemon.docker(
        "run", "--rm", "--network", "host", "--entrypoint", "python", image.tag, "-c", "import torch, numpy"
    )
    ran = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    again = images.load_into(image, fresh_daemon, "node-x", quiet)
    assert (again.name, again.cached) == ("load node-x", True)
