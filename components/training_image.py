"""TrainingImage: the one image every host runs.

Either the spec's image as hosts pull it (``image.name@image.digest``, or its
tag when unpinned: a warning), or (with ``gpufleet:build_image``) built once
on the runner from the rendered, locked image context. Built for a registry,
it is pushed and hosts pull the pushed repo digest, so every host runs the
same bytes; built for ``image.distribution: ssh``, it stays on the runner and
ImageDelivery streams it to each host.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pulumi
import pulumi_docker as docker

RESOURCE_TYPE = "gpufleet:components:TrainingImage"
BUILD_PLATFORM = "linux/amd64"


class TrainingImageArgs(TypedDict):
    reference: pulumi.Input[str]
    """What hosts get without a build: name@sha256:... (or name:tag)."""
    build_context: NotRequired[str]
    """A folder holding the rendered image context (Dockerfile, entrypoint.sh, gpufleet-env/)."""
    build_name: NotRequired[str]
    """name:tag of the build (a content tag: gpufleet-<12 hex>)."""
    push: NotRequired[bool]
    """Push the build (registry distribution); False keeps it on the runner (ssh distribution)."""


def _digest_of(reference: str) -> str | None:
    return reference.split("@", 1)[1] if "@" in reference else None


class TrainingImage(pulumi.ComponentResource):
    reference: pulumi.Output[str]
    """What hosts run: name@sha256:... after a push, else the reference as given or built."""
    digest: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: TrainingImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        context = args.get("build_context")
        if context:
            push = args.get("push", True)
            image = docker.Image(
                f"{name}-build",
                image_name=args["build_name"],
                build=docker.DockerBuildArgs(
                    context=context, dockerfile=f"{context}/Dockerfile", platform=BUILD_PLATFORM
                ),
                skip_push=not push,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.reference = image.repo_digest if push else image.image_name
        else:
            self.reference = pulumi.Output.from_input(args["reference"])
        self.digest = self.reference.apply(_digest_of)
        self.register_outputs({"reference": self.reference, "digest": self.digest})
