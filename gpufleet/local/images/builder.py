"""The build daemon: a private dockerd over the cache's data-root, started on first use."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gpufleet.environment.docker_client import DockerClient, inspect_image
from gpufleet.local import dockerd
from gpufleet.local.images.cache import builder_data_root, cache_dir, stored_image_id, stored_labels
from gpufleet.local.images.steps import CHROOT_ENV, Progress, require_docker

DOCKER_ENV = {"PATH": CHROOT_ENV["PATH"], "LANG": "C.UTF-8"}


@dataclass
class BuildDaemon:
    """The build daemon, started on first use and stopped on exit."""

    progress: Progress
    daemon: dockerd.Daemon | None = None
    run_dir: Path | None = None
    started_s: float = field(default=0.0)

    @property
    def data_root(self) -> Path:
        return builder_data_root()

    def get(self) -> dockerd.Daemon:
        if self.daemon is None:
            require_docker()
            began = time.monotonic()
            stop_stale_builder(self.data_root)
            self.run_dir = Path(tempfile.mkdtemp(prefix="gpufleet-builder-"))
            paths = dockerd.DaemonPaths(data_root=self.data_root, run_dir=self.run_dir)
            daemon = dockerd.start(paths)
            self.daemon = daemon
            builder_pidfile().write_text(f"{daemon.pid}\n")
            dockerd.wait_ready(daemon, "image: the build daemon")
            self.started_s = time.monotonic() - began
            self.progress(f"image: build daemon started in {self.started_s:.1f} s")
        return self.daemon

    def client(self) -> DockerClient:
        """The docker CLI of the build daemon (started if need be): Debian's, which has BuildKit built in."""
        return DockerClient(tuple(self.get().docker()), docker_env(True), buildkit=True)

    def stop(self) -> None:
        if self.daemon is not None:
            dockerd.stop(self.daemon.pid, self.daemon.paths)
            dockerd.unmount_below(self.data_root)
            if not dockerd.exited(self.daemon):
                self.progress(f"image: the build daemon (pid {self.daemon.pid}) did not stop")
            self.daemon = None
            builder_pidfile().unlink(missing_ok=True)
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None

    def image_id(self, ref: str, label: tuple[str, str] | None = None) -> str | None:
        """The id of ``ref`` in the cache (with ``label`` set, when given); from its files if possible."""
        if self.daemon is None:
            found = stored_image_id(self.data_root, ref)
            if found is not None and (
                label is None or stored_labels(self.data_root, found).get(label[0]) == label[1]
            ):
                return found
            if not self.data_root.exists():
                return None
        return daemon_image_id(self.get(), ref, label)


def builder_pidfile() -> Path:
    return cache_dir() / "builder.pid"


def stop_stale_builder(data_root: Path) -> None:
    """The build daemon of a caller that was killed (we hold the lock: it is nobody's now)."""
    try:
        pid = int(builder_pidfile().read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if Path(argv[0].decode(errors="replace")).name == dockerd.DOCKERD and (
        f"--data-root={data_root}".encode() in argv
    ):
        dockerd.stop(pid)
        dockerd.unmount_below(data_root)
    builder_pidfile().unlink(missing_ok=True)


@contextlib.contextmanager
def build_daemon(progress: Progress) -> Iterator[BuildDaemon]:
    builder = BuildDaemon(progress)
    try:
        yield builder
    finally:
        builder.stop()


def daemon_image_id(daemon: dockerd.Daemon, ref: str, label: tuple[str, str] | None = None) -> str | None:
    """The id of ``ref`` in ``daemon`` (when it carries ``label``, if given)."""
    info = inspect_image(DockerClient(tuple(daemon.docker()), DOCKER_ENV), ref)
    if info is None or (label is not None and info.labels.get(label[0]) != label[1]):
        return None
    return info.id


def docker_env(buildkit: bool) -> dict[str, str]:
    return {**DOCKER_ENV, "DOCKER_BUILDKIT": "1" if buildkit else "0", "HOME": "/root"}
