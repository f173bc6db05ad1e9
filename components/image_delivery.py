"""ImageDelivery: the image streamed over the host's pinned SSH login into its Docker daemon.

For sites without a registry (``image.distribution: ssh``): the runner holds
the image (built there by TrainingImage, or by ``gpufleet build``), pipes
``docker save`` into ``docker load`` on the host over the same pinned login
the Docker provider uses, and checks that the host now has the runner's image
id. The command's output is that id: the container runs exactly it.
"""

from __future__ import annotations

import shlex
from typing import TypedDict

import pulumi
from pulumi_command import local

from components.remote_access import SshTarget, docker_ssh_opts

RESOURCE_TYPE = "gpufleet:components:ImageDelivery"


class ImageDeliveryArgs(TypedDict):
    reference: pulumi.Input[str]
    """The image as the runner's Docker knows it (name:tag)."""
    target: SshTarget
    identity_file: str


def delivery_script(reference: str, target: SshTarget, identity_file: str) -> str:
    """bash: stream ``reference`` to the host, verify its image id there, print it."""
    ssh = shlex.join(
        [
            "ssh",
            *docker_ssh_opts(target, identity_file),
            "-p",
            str(target.port),
            f"{target.user}@{target.host}",
        ]
    )
    image = shlex.quote(reference)
    inspect = f"docker image inspect --format '{{{{.Id}}}}' {image}"
    return "\n".join(
        [
            "set -euo pipefail",
            f"want=$({inspect})",
            f"docker save {image} | {ssh} docker load >&2",
            f"got=$({ssh} {shlex.quote(inspect)})",
            f'[ "$got" = "$want" ] || {{ echo "{target.host}: loaded image id $got, the runner has $want" >&2; exit 1; }}',
            'printf %s "$got"',
        ]
    )


class ImageDelivery(pulumi.ComponentResource):
    image_id: pulumi.Output[str]
    """The id the host's daemon has, verified equal to the runner's."""

    def __init__(
        self, name: str, args: ImageDeliveryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        script = pulumi.Output.from_input(args["reference"]).apply(
            lambda reference: delivery_script(reference, args["target"], args["identity_file"])
        )
        stream = local.Command(
            f"{name}-stream",
            create=script,
            interpreter=["/bin/bash", "-c"],
            triggers=[args["reference"]],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_id = stream.stdout
        self.register_outputs({"image_id": self.image_id})
