"""The effective base of a stack's image: the stand-in, or image.base from the cache or a pull."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gpufleet.environment.lockfile import Lock, LockedBase
from gpufleet.environment.packages import uses_stand_in_base
from gpufleet.errors import GpufleetError
from gpufleet.local import dockerd
from gpufleet.local.images.builder import BuildDaemon, daemon_image_id, docker_env
from gpufleet.local.images.cache import BuildStep, builder_data_root
from gpufleet.local.images.stand_in import RECIPE_LABEL, build_stand_in, machine_recipe
from gpufleet.local.images.steps import Progress, open_log, run_step
from gpufleet.spec.models import ClusterSpec

PULL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Base:
    """The effective base in the build daemon, and how a lock names it."""

    tag: str  # what the build daemon knows it as
    id: str
    locked: LockedBase  # reference (the stand-in's stable name, or image.base) and ids
    step: BuildStep


def ensure_base(spec: ClusterSpec, builder: BuildDaemon, progress: Progress) -> Base:
    started = time.monotonic()
    if not uses_stand_in_base(spec):
        return given_base(spec.image.base, builder, progress, started)
    recipe = machine_recipe()
    tag = recipe.tag
    image_id = builder.image_id(tag, (RECIPE_LABEL, recipe.digest))
    cached = image_id is not None
    if image_id is not None:
        progress(f"image: base {tag} cached")
    else:
        image_id = build_stand_in(recipe, builder, progress)
        progress(f"image: base {tag} built in {time.monotonic() - started:.1f} s")
    if builder.image_id(recipe.stable_name) != image_id:  # locks and Dockerfiles name it so
        tagged = dockerd.docker_cli(builder.get(), "tag", image_id, recipe.stable_name)
        if tagged.returncode != 0:
            raise GpufleetError(f"image: docker tag {recipe.stable_name} failed: {tagged.stderr.strip()}")
    step = BuildStep("base", time.monotonic() - started, cached)
    return Base(tag, image_id, LockedBase(reference=recipe.stable_name), step)


def given_base(base: str, builder: BuildDaemon, progress: Progress, started: float) -> Base:
    image_id = builder.image_id(base)
    if image_id is not None:
        progress(f"image: base {base} cached")
        step = BuildStep("base", time.monotonic() - started, True)
        return Base(base, image_id, LockedBase(reference=base, image_id=image_id), step)
    progress(f"image: base {base}: not in the image cache; trying docker pull")
    log = open_log("base-pull")
    try:
        pull = [builder.get().docker("pull", base)]
        run_step("base: docker pull", pull, log, progress, env=docker_env(False), timeout=PULL_TIMEOUT_S)
    except GpufleetError:
        data_root = builder_data_root()
        raise GpufleetError(
            f"image: image.base {base!r} is not in the local image cache ({data_root}) and cannot be "
            f"pulled (no registry reachable; log: {log}): leave image.base unset in a local stack to use "
            "the offline CPU stand-in base, or load it into the cache: `docker save` it where it exists, "
            f"then here `dockerd --data-root {data_root} --exec-root /tmp/gpufleet-cache-exec "
            "--pidfile /tmp/gpufleet-cache.pid --host unix:///tmp/gpufleet-cache.sock --bridge=none "
            "--iptables=false --ip6tables=false --ip-forward=false &`, "
            "`/usr/bin/docker -H unix:///tmp/gpufleet-cache.sock load -i BASE.tar`, and stop that dockerd"
        ) from None
    image_id = daemon_image_id(builder.get(), base)
    if image_id is None:
        raise GpufleetError(
            f"image: image.base {base!r} was pulled but is not in the build daemon; see {log}"
        )
    seconds = time.monotonic() - started
    progress(f"image: base {base} pulled in {seconds:.1f} s")
    return Base(
        base, image_id, LockedBase(reference=base, image_id=image_id), BuildStep("base", seconds, False)
    )


def base_problem(lock: Lock, base: LockedBase) -> str | None:
    """Why ``lock`` was not made against this base (a rebuilt stand-in, another loaded image)."""
    if lock.base.reference != base.reference:
        return f"it was resolved in {lock.base.reference}, the base is now {base.reference}"
    if base.image_id is not None and lock.base.image_id != base.image_id:
        return f"it was resolved in {base.reference} at image id {lock.base.image_id}, the cache has {base.image_id}"
    return None
