"""``gpufleet lock`` for a local stack: the packages resolved inside its base, in the build daemon."""

from __future__ import annotations

from gpufleet.environment import pip_settings, resolve
from gpufleet.environment.lockfile import Lock, lock_problem, read_lock, write_lock
from gpufleet.environment.packages import environment_inputs
from gpufleet.local.images.base import base_problem, ensure_base
from gpufleet.local.images.builder import build_daemon
from gpufleet.local.images.cache import DIGEST_CHARS, cache_dir, clean_leftovers, inputs_digest, machine_lock
from gpufleet.local.images.stand_in import machine_recipe
from gpufleet.local.images.steps import Progress, open_log
from gpufleet.spec.models import ClusterSpec


def lock_image(spec: ClusterSpec, previous: Lock | None, upgrade: bool, progress: Progress) -> Lock:
    """Resolve the stack's packages in its base (built or found in the cache): ``gpufleet lock``."""
    inputs = environment_inputs(spec)
    with machine_lock(progress):
        clean_leftovers()
        with build_daemon(progress) as builder:
            base = ensure_base(spec, builder, progress)
            if previous is not None and base_problem(previous, base.locked):
                previous = None  # another base: nothing of the old resolution applies
            progress(
                f"lock: resolving {len(inputs.python_packages)} Python and {len(inputs.apt_packages)} "
                f"apt packages in {base.locked.reference} (about 30 s)"
            )
            log = open_log("lock")
            return resolve.resolve(
                builder.client(),
                base.tag,
                base.locked,
                inputs,
                previous,
                upgrade,
                None,  # the machine's mirror: the stand-in has no snapshot service to pin
                pip_settings.machine_settings(),
                log,
            )


def cached_lock(spec: ClusterSpec, progress: Progress) -> Lock:
    """A lock for a spec with no stack file (tests, benchmarks): resolved once per inputs on this machine."""
    inputs = environment_inputs(spec)
    key = inputs_digest({"inputs": inputs.model_dump(mode="json"), "torch": machine_recipe().stable_name})
    path = cache_dir() / "locks" / f"{key[: DIGEST_CHARS * 2]}.lock"
    lock = read_lock(path) if path.is_file() else None
    if lock is None or lock_problem(lock, inputs) is not None:
        lock = lock_image(spec, None, False, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_lock(path, lock)
    return lock
