"""GpuCluster: keys, the image, and one GpuHost per host of the spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.cluster_keys import ClusterKeys, ClusterKeysArgs
from components.gpu_host import GpuHost, GpuHostArgs
from components.training_image import TrainingImage, TrainingImageArgs
from gpufleet.derive.firewall import firewall_plan
from gpufleet.derive.nccl import nccl_env
from gpufleet.spec.models import ClusterSpec

RESOURCE_TYPE = "gpufleet:components:GpuCluster"


@dataclass(frozen=True)
class GpuClusterArgs:
    """The validated spec (see GpuHostArgs for why a dataclass) and the runner's key."""

    spec: ClusterSpec
    runner_private_key: pulumi.Input[str]
    """Secret: logs the runner into each host's own sshd (firewall commands)."""
    build_context: str | None = None
    """A folder with the rendered image context: build the image once from it."""
    build_tag: str = "latest"
    """The build's tag (a content tag), on image.name's repository."""


class GpuCluster(pulumi.ComponentResource):
    inventory: pulumi.Output[list[dict[str, Any]]]
    controller_private_key: pulumi.Output[str]
    controller_public_key: pulumi.Output[str]
    image_digest: pulumi.Output[str | None]
    nccl_env: dict[str, dict[str, str]]
    """Per host name, the NCCL environment its container runs with."""

    def __init__(self, name: str, args: GpuClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        spec = args.spec
        child = pulumi.ResourceOptions(parent=self)
        keys = ClusterKeys(
            f"{name}-keys", ClusterKeysArgs(host_names=[h.name for h in spec.hosts]), opts=child
        )
        ssh = spec.distribution == "ssh"
        # Without a registry the runner's copy is streamed: by its tag (image.name), not a pull reference.
        reference = str(spec.image.ref.with_default_tag()) if ssh else spec.image.reference
        image_args = TrainingImageArgs(reference=reference)
        if args.build_context:
            image_args["build_context"] = args.build_context
            image_args["build_name"] = str(spec.image.ref.tagged(args.build_tag))
            image_args["push"] = not ssh
        image = TrainingImage(f"{name}-image", image_args, opts=child)

        plan = firewall_plan(spec)  # the same on every host: derive it once
        hosts = []
        self.nccl_env = {}
        for host in spec.hosts:
            nccl = nccl_env(spec, host)
            self.nccl_env[host.name] = dict(nccl.env)
            hosts.append(
                GpuHost(
                    f"{name}-{host.name}",
                    GpuHostArgs(
                        spec=spec,
                        host=host,
                        nccl=nccl,
                        firewall_plan=plan,
                        image_reference=image.reference,
                        controller_public_key=keys.controller_public_key,
                        host_public_key=keys.host_public_keys[host.name],
                        host_private_key=keys.host_private_keys[host.name],
                        runner_private_key=args.runner_private_key,
                    ),
                    opts=child,
                )
            )
        self.inventory = pulumi.Output.all(*(h.inventory_entry for h in hosts))
        self.controller_private_key = keys.controller_private_key
        self.controller_public_key = keys.controller_public_key
        self.image_digest = image.digest
        self.register_outputs(
            {
                "inventory": self.inventory,
                "controller_public_key": self.controller_public_key,
                "image_digest": self.image_digest,
                "nccl_env": self.nccl_env,
            }
        )
