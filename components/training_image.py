"""TrainingImage: the one image every host runs, pinned by digest.

Either the spec's ``image.name@image.digest``, or (with ``gpufleet:build_image``)
built once on the runner from the rendered Dockerfile and pushed: hosts then
pull the pushed repo digest, so every host runs the same bytes.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import pulumi
import pulumi_docker as docker

RESOURCE_TYPE = "gpufleet:components:TrainingImage"
BUILD_PLATFORM = "linux/amd64"


class TrainingImageArgs(TypedDict):
    name: pulumi.Input[str]
    """Registry reference without tag or digest (registry.example.com/ml/train)."""
    digest: pulumi.Input[str | None]
    """'sha256:...' from the spec; None only when building (or when unpinned: a warning)."""
    build_context: NotRequired[str]
    """A folder holding the rendered Dockerfile and entrypoint.sh: build and push from it."""
    build_tag: NotRequired[str]
    """The tag pushed with the build (the digest is what hosts pull)."""


def _digest_of(reference: str) -> str | None:
    return reference.split("@", 1)[1] if "@" in reference else None


class TrainingImage(pulumi.ComponentResource):
    reference: pulumi.Output[str]
    """What hosts pull: name@sha256:..."""
    digest: pulumi.Output[str | None]

    def __init__(
        self, name: str, args: TrainingImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        context = args.get("build_context")
        if context:
            tag = args.get("build_tag", "latest")
            image = docker.Image(
                f"{name}-build",
                image_name=pulumi.Output.concat(args["name"], ":", tag),
                build=docker.DockerBuildArgs(
                    context=context, dockerfile=f"{context}/Dockerfile", platform=BUILD_PLATFORM
                ),
                skip_push=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.reference = image.repo_digest
        else:
            self.reference = pulumi.Output.all(args["name"], args["digest"]).apply(
                lambda parts: f"{parts[0]}@{parts[1]}" if parts[1] else f"{parts[0]}:latest"
            )
        self.digest = self.reference.apply(_digest_of)
        self.register_outputs({"reference": self.reference, "digest": self.digest})
