"""The Pulumi program: ``pulumi up --stack NAME`` stands up the cluster of stacks/Pulumi.NAME.yaml.

Reads ``gpufleet:cluster`` (the same spec ``gpufleet validate`` checks), builds
one GpuCluster and exports what ``gpufleet inventory`` turns into the
launcher's inventory.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pulumi

from components import GpuCluster, GpuClusterArgs
from components.stack_config import BUILD_CONFIG, runner_private_key, validated_spec
from gpufleet import pulumi_outputs as out
from gpufleet.environment.lockfile import Lock, lock_path
from gpufleet.environment.stack_lock import current_lock, lock_command
from gpufleet.errors import InputError
from gpufleet.inventory import state_dir
from gpufleet.render.renderer import render_image_context, write_tree
from gpufleet.spec import ClusterSpec

PROJECT = Path(__file__).resolve().parent


def _stack_lock(spec: ClusterSpec, stack: str) -> Lock:
    """stacks/Pulumi.<stack>.lock, which must fit the spec: the image installs exactly it."""
    stack_file = PROJECT / "stacks" / f"Pulumi.{stack}.yaml"
    try:
        lock = current_lock(stack_file, spec)
    except InputError as error:
        raise pulumi.RunError(str(error)) from None
    if lock is None:
        raise pulumi.RunError(
            f"{lock_path(stack_file).name} is missing: the image installs exactly the stack's lock; run "
            f"`{lock_command(stack_file)}` where Docker can pull image.base (this runner), then commit it"
        )
    return lock


def _build_context(spec: ClusterSpec, lock: Lock, lock_name: str) -> tuple[str, str]:
    """Render the image's build context into the cluster's state folder; tag it by content."""
    folder = state_dir(PROJECT, spec.name) / "image"
    shutil.rmtree(folder, ignore_errors=True)  # rendered files only: nothing of a user's
    files = render_image_context(spec, lock, lock_name)
    write_tree(files, folder)
    tag = hashlib.sha256("".join(f"{name}\0{text}" for name, text in sorted(files.items())).encode())
    return str(folder), f"gpufleet-{tag.hexdigest()[:12]}"


config = pulumi.Config("gpufleet")
spec = validated_spec(config.require_object("cluster"), pulumi.get_stack())
args = GpuClusterArgs(spec=spec, runner_private_key=runner_private_key(config, spec))
if config.get_bool(BUILD_CONFIG):
    stack = pulumi.get_stack()
    context, tag = _build_context(spec, _stack_lock(spec, stack), f"Pulumi.{stack}.lock")
    args = GpuClusterArgs(
        spec=spec, runner_private_key=args.runner_private_key, build_context=context, build_tag=tag
    )
elif spec.image.digest is None and spec.distribution == "registry":
    pulumi.log.warn(
        f"image.digest is not set: hosts pull {spec.image.reference}, a tag that may move; "
        "`gpufleet build --push` prints the digest to pin"
    )
cluster = GpuCluster(spec.name, args)

pulumi.export(out.CLUSTER, spec.name)
pulumi.export(out.INVENTORY, cluster.inventory)
pulumi.export(out.CONTROLLER_PRIVATE_KEY, cluster.controller_private_key)
pulumi.export(out.CONTROLLER_PUBLIC_KEY, cluster.controller_public_key)
pulumi.export(out.IMAGE_DIGEST, cluster.image_digest)
pulumi.export(out.NCCL_ENV, cluster.nccl_env)
