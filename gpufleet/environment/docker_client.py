"""A docker CLI and the daemon it talks to, as one value: the local build daemon or this machine's Docker."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from gpufleet.errors import GpufleetError


@dataclass(frozen=True)
class DockerClient:
    prefix: tuple[str, ...]  # ("/usr/bin/docker", "--host", "unix:///...") or ("docker",)
    env: Mapping[str, str] | None = field(default=None)  # None: this process's (DOCKER_HOST, DOCKER_CONFIG)
    buildkit: bool | None = None  # None: as the CLI decides (a CLI without buildx builds classic)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, *args]

    def environment(self, buildkit: bool | None = None) -> dict[str, str]:
        env = dict(self.env if self.env is not None else os.environ)
        buildkit = self.buildkit if buildkit is None else buildkit
        if buildkit is not None:
            env["DOCKER_BUILDKIT"] = "1" if buildkit else "0"
        return env

    def run(
        self, *args: str, timeout: float | None = None, data: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS``; the caller reads returncode, stdout and stderr (text)."""
        return subprocess.run(
            self.argv(*args),
            input=data.decode() if data is not None else None,
            capture_output=True,
            text=True,
            check=False,
            env=self.environment(),
            timeout=timeout,
        )


def machine_docker() -> DockerClient:
    """This machine's Docker as its user reaches it (DOCKER_HOST and its config honoured)."""
    found = shutil.which("docker")
    if found is None:
        raise GpufleetError(
            "docker: no docker CLI on PATH: a stack that is not local is locked and built with this "
            "machine's Docker (install Docker, or run gpufleet where it is: the Pulumi runner)"
        )
    return DockerClient((found,))
