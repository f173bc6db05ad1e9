"""lock and build: the team's environment, pinned and built once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.common import FileOption, StackOption, console, err_console, load_cli_spec
from gpufleet.environment.lockfile import Lock, lock_path, read_lock, write_lock
from gpufleet.environment.stack_lock import current_lock
from gpufleet.errors import InputError
from gpufleet.spec.models import ClusterSpec

UpgradeOption = Annotated[
    bool,
    typer.Option(
        "--upgrade", help="Resolve afresh: newest versions (and a new apt snapshot), old pins ignored."
    ),
]


def _progress(message: str) -> None:
    err_console.print(message, highlight=False, markup=False, soft_wrap=True)


def builds_locally(spec: ClusterSpec) -> bool:
    """A local stack is locked and built in the machine's image cache; any other with the machine's Docker."""
    return spec.provisioner == "local"


NoSnapshotOption = Annotated[
    bool,
    typer.Option(
        "--no-snapshot",
        help="Install apt packages from the base's own sources, not a dated snapshot of the archive "
        "(for mirrors without a snapshot service; versions are still pinned).",
    ),
]


def lock(
    stack: StackOption = None,
    file: FileOption = None,
    upgrade: UpgradeOption = False,
    no_snapshot: NoSnapshotOption = False,
) -> None:
    """Pin every package of the image (Python with hashes, apt at exact versions) by resolving them
    inside the base image; write Pulumi.<stack>.lock next to the stack file. Re-locking keeps pins
    that still fit (--upgrade resolves afresh)."""
    path, spec = load_cli_spec(stack, file, quiet=True)
    target = lock_path(path)
    previous = read_lock(target)
    resolved = lock_for(spec, previous, upgrade, snapshot=not no_snapshot)
    write_lock(target, resolved)
    console.print(
        f"{target}: {len(resolved.python)} Python and {len(resolved.apt.packages)} apt packages pinned "
        f"(base {resolved.base.reference})",
        highlight=False,
        soft_wrap=True,
    )


def lock_for(spec: ClusterSpec, previous: Lock | None, upgrade: bool, snapshot: bool = True) -> Lock:
    from gpufleet.local import images  # the image machinery, only when a command needs it
    from gpufleet.local.images import machine_docker

    if builds_locally(spec):
        return images.lock_image(spec, previous, upgrade, _progress)
    return machine_docker.lock_image(spec, previous, upgrade, _progress, snapshot=snapshot)


def ensure_stack_lock(path: Path, spec: ClusterSpec) -> Lock:
    """The stack's lock; a missing one is made (and said so), a stale one refused."""
    found = current_lock(path, spec)
    if found is not None:
        return found
    made = lock_for(spec, None, False)
    write_lock(lock_path(path), made)
    console.print(f"lock: wrote {lock_path(path)} (commit it)", highlight=False, soft_wrap=True)
    return made


NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Rebuild every step (the same lock: the same packages).")
]
PushOption = Annotated[
    bool, typer.Option("--push", help="Push to image.name's registry; print the digest to pin.")
]


def build(
    stack: StackOption = None,
    file: FileOption = None,
    no_cache: NoCacheOption = False,
    push: PushOption = False,
) -> None:
    """Build the training image from the rendered context (exactly the lock): a local stack in the local
    image cache, any other with this machine's Docker. Prints `image <id>` and `manifest sha256:...`."""
    path, spec = load_cli_spec(stack, file)
    if push and builds_locally(spec):
        raise InputError("--push: a local stack has no registry; its image is streamed into each host by up")
    from gpufleet.local import images
    from gpufleet.local.images import machine_docker

    locked = ensure_stack_lock(path, spec)
    if builds_locally(spec):
        image, _ = images.ensure_image(spec, _progress, lock=locked, no_cache=no_cache)
        image_id, manifest, digest = image.id, image.manifest_digest, None
    else:
        built = machine_docker.build(spec, locked, no_cache, push, _progress)
        image_id, manifest, digest = built.id, built.manifest_digest, built.digest
    console.print(f"image {image_id}", highlight=False)
    console.print(f"manifest {manifest}", highlight=False)
    if digest is not None:
        console.print(f"digest {digest}  (pin it: image.digest: {digest})", highlight=False)
