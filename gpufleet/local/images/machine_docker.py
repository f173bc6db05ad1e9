"""``lock`` and ``build`` for stacks that are not local: with this machine's Docker (the Pulumi runner's).

The base is pulled (or, on a site without a registry, found already loaded),
the lock is resolved in it with the machine's pip settings and, for Debian and
Ubuntu, a snapshot of their archive; the build runs the same rendered context
the local cache builds, FROM the base pinned by digest.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gpufleet.environment import pip_settings, resolve
from gpufleet.environment.docker_client import DockerClient, inspect_image, machine_docker
from gpufleet.environment.lockfile import Lock, LockedBase
from gpufleet.environment.packages import environment_inputs
from gpufleet.errors import GpufleetError
from gpufleet.local.images.steps import Progress, open_log
from gpufleet.local.images.training import BuildContext, build_context, build_image
from gpufleet.spec.image_ref import ImageRef
from gpufleet.spec.models import ClusterSpec

PULL_TIMEOUT_S = 1800.0
PUSH_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class BuiltImage:
    tag: str  # image.name as written (":latest" when untagged)
    id: str
    manifest_digest: str
    digest: str | None  # the registry digest after --push: what image.digest pins


def repo_digest(reference: str, repo_digests: Sequence[str]) -> str | None:
    """The ``sha256:`` of ``reference``'s repository among docker's RepoDigests (``repo@sha256:...``)."""
    wanted = ImageRef.parse(reference).familiar_repository
    for entry in repo_digests:
        name, _, digest = entry.partition("@")
        if digest and ImageRef.parse(name).familiar_repository == wanted:
            return digest
    return None


def pull_base(docker: DockerClient, reference: str, progress: Progress) -> LockedBase:
    """``reference`` pulled; without a registry, as already loaded here (then pinned by image id)."""
    progress(f"lock: docker pull {reference}")
    log = open_log("lock-pull")
    try:
        pulled = docker.run("pull", reference, timeout=PULL_TIMEOUT_S)
        log.write_text(pulled.stdout + pulled.stderr)
        failed = pulled.returncode != 0
    except subprocess.TimeoutExpired:
        failed = True
    found = inspect_image(docker, reference)
    if found is None:
        raise GpufleetError(
            f"lock: image.base {reference} cannot be pulled and is not loaded in this machine's Docker "
            f"(log: {log}): run lock where Docker can pull it, or `docker load` it first"
        )
    digest = ImageRef.parse(reference).digest or repo_digest(reference, found.repo_digests)
    if failed:
        progress(f"lock: {reference} not pulled; using the image loaded here ({found.id})")
    return LockedBase(reference=reference, digest=digest, image_id=None if digest else found.id)


def lock_image(
    spec: ClusterSpec, previous: Lock | None, upgrade: bool, progress: Progress, snapshot: bool = True
) -> Lock:
    """Resolve the stack's packages in its base with this machine's Docker: ``gpufleet lock``."""
    docker = machine_docker()
    inputs = environment_inputs(spec)
    base = pull_base(docker, spec.image.base, progress)
    if previous is not None and (previous.base.digest, previous.base.image_id) != (
        base.digest,
        base.image_id,
    ):
        previous = None  # another base: nothing of the old resolution applies
    progress(
        f"lock: resolving {len(inputs.python_packages)} Python and {len(inputs.apt_packages)} apt "
        f"packages in {base.pinned}"
    )
    when = resolve.snapshot_now() if snapshot else None
    settings = pip_settings.machine_settings()
    return resolve.resolve(
        docker, base.pinned, base, inputs, previous, upgrade, when, settings, open_log("lock")
    )


def _context(spec: ClusterSpec, lock: Lock) -> BuildContext:
    return build_context(spec, lock, lock.base.digest or lock.base.image_id or lock.base.reference)


def build(spec: ClusterSpec, lock: Lock, no_cache: bool, push: bool, progress: Progress) -> BuiltImage:
    """The rendered, locked context built with this machine's Docker, tagged image.name; pushed on ``push``."""
    docker = machine_docker()
    context = _context(spec, lock)
    started = time.monotonic()
    progress(f"build: {context.tag} from the rendered image context (FROM {lock.base.pinned})")
    image = build_image(docker, context, progress, no_cache=no_cache)
    name = str(ImageRef.parse(spec.image.name).with_default_tag())
    tagged = docker.run("tag", image.id, name)
    if tagged.returncode != 0:
        raise GpufleetError(f"build: docker tag {name} failed: {tagged.stderr.strip()}")
    progress(f"build: {name} built in {time.monotonic() - started:.1f} s")
    digest = _push(docker, name, progress) if push else None
    return BuiltImage(name, image.id, image.manifest_digest or "", digest)


def _push(docker: DockerClient, name: str, progress: Progress) -> str:
    progress(f"build: docker push {name}")
    pushed = docker.run("push", name, timeout=PUSH_TIMEOUT_S)
    if pushed.returncode != 0:
        last = (pushed.stderr.strip().splitlines() or ["no output"])[-1]
        raise GpufleetError(f"build: docker push {name} failed: {last}")
    found = inspect_image(docker, name)
    digest = repo_digest(name, found.repo_digests) if found else None
    if digest is None:
        raise GpufleetError(f"build: {name} was pushed but docker reports no digest for it")
    return digest
