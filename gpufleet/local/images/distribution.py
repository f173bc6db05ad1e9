"""Delivering a built image into a host's own Docker daemon (``docker save | docker load``)."""

from __future__ import annotations

import re
import time

from gpufleet.errors import GpufleetError
from gpufleet.local import dockerd
from gpufleet.local.images.builder import build_daemon, daemon_image_id, docker_env
from gpufleet.local.images.cache import BuildStep, LocalImage, builder_data_root, machine_lock
from gpufleet.local.images.steps import Progress, open_log, run_step


def load_into(image: LocalImage, target: dockerd.Daemon, host: str, progress: Progress) -> BuildStep:
    """``image`` into a host's daemon (``docker save | docker load`` from the cache) unless it has it."""
    started = time.monotonic()
    name = f"load {host}"
    if daemon_image_id(target, image.id) == image.id:
        if daemon_image_id(target, image.tag) != image.id:
            tagged = dockerd.docker_cli(target, "tag", image.id, image.tag)
            if tagged.returncode != 0:
                raise GpufleetError(f"image: {host}: docker tag {image.tag} failed: {tagged.stderr.strip()}")
        progress(f"image: {host} already has {image.tag}")
        return BuildStep(name, time.monotonic() - started, True)
    with machine_lock(progress), build_daemon(progress) as builder:
        if builder.image_id(image.tag) != image.id:
            raise GpufleetError(
                f"image: {image.tag} ({image.id}) is no longer in the image cache ({builder_data_root()}): "
                "build it again (gpufleet up builds it)"
            )
        progress(f"image: loading {image.tag} into {host} (about 30 s)")
        log = open_log(f"load-{re.sub(r'[^A-Za-z0-9_.-]', '_', host)}")
        run_step(
            f"{name}: docker save | docker load",
            [builder.get().docker("save", image.tag), target.docker("load")],
            log,
            progress,
            env=docker_env(False),
        )
    if daemon_image_id(target, image.tag) != image.id:
        raise GpufleetError(
            f"image: {host}: {image.tag} is not in the host's daemon after docker load, or has another "
            f"image id than {image.id}; see {log}"
        )
    seconds = time.monotonic() - started
    progress(f"image: loaded into {host} in {seconds:.1f} s")
    return BuildStep(name, seconds, False)
