"""The Pulumi program: ``pulumi up --stack NAME`` stands up the cluster of stacks/Pulumi.NAME.yaml.

Reads ``gpufleet:cluster`` (the same spec ``gpufleet validate`` checks), builds
one GpuCluster and exports what ``gpufleet inventory`` turns into the
launcher's inventory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi

from components import GpuCluster, GpuClusterArgs
from components.stack_config import BUILD_CONFIG, runner_private_key, validated_spec
from gpufleet import pulumi_outputs as out
from gpufleet.inventory import state_dir
from gpufleet.render.renderer import render_dockerfile, render_entrypoint
from gpufleet.spec import ClusterSpec


def _build_context(spec: ClusterSpec) -> tuple[str, str]:
    """Render the image's files into the cluster's state folder; tag them by content."""
    folder = state_dir(Path(__file__).resolve().parent, spec.name) / "image"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"Dockerfile": render_dockerfile(spec), "entrypoint.sh": render_entrypoint(spec)}
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    tag = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:12]
    return str(folder), f"gpufleet-{tag}"


config = pulumi.Config("gpufleet")
spec = validated_spec(config.require_object("cluster"), pulumi.get_stack())
args = GpuClusterArgs(spec=spec, runner_private_key=runner_private_key(config, spec))
if config.get_bool(BUILD_CONFIG):
    context, tag = _build_context(spec)
    args = GpuClusterArgs(
        spec=spec, runner_private_key=args.runner_private_key, build_context=context, build_tag=tag
    )
elif spec.image.digest is None:
    pulumi.log.warn("image.digest is not set: hosts pull 'latest' and may run different images")
cluster = GpuCluster(spec.name, args)

pulumi.export(out.CLUSTER, spec.name)
pulumi.export(out.INVENTORY, cluster.inventory)
pulumi.export(out.CONTROLLER_PRIVATE_KEY, cluster.controller_private_key)
pulumi.export(out.CONTROLLER_PUBLIC_KEY, cluster.controller_public_key)
pulumi.export(out.IMAGE_DIGEST, cluster.image_digest)
pulumi.export(out.NCCL_ENV, cluster.nccl_env)
