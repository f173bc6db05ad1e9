"""A docker CLI and the daemon it talks to, as one value: the local build daemon or this machine's Docker."""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class ImageInfo:
    """What ``docker image inspect`` says of one image: its id, labels and registry digests."""

    id: str
    labels: Mapping[str, str]
    repo_digests: tuple[str, ...]  # "repository@sha256:..." per registry it was pulled from or pushed to


# One JSON value per line: Go's JSON escapes newlines, so a label value cannot split a line.
_INSPECT_FORMAT = "{{json .Id}}\n{{json .Config.Labels}}\n{{json .RepoDigests}}"


def inspect_image(docker: DockerClient, reference: str) -> ImageInfo | None:
    """``reference`` (a name, or an id) as ``docker`` knows it; None when it has no such image."""
    probe = docker.run("image", "inspect", "--format", _INSPECT_FORMAT, reference)
    if probe.returncode != 0:
        return None
    try:
        image_id, labels, digests = (json.loads(line) for line in probe.stdout.strip().split("\n"))
    except ValueError:
        return None
    if not isinstance(image_id, str) or not image_id:
        return None
    return ImageInfo(
        id=image_id,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        repo_digests=tuple(str(d) for d in digests or ()) if isinstance(digests, list) else (),
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
