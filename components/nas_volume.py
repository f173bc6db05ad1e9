"""NasVolume: a Docker volume backed by an NFS share (local driver, type nfs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

import pulumi
import pulumi_docker as docker

RESOURCE_TYPE = "gpufleet:components:NasVolume"


class NasVolumeArgs(TypedDict):
    volume_name: pulumi.Input[str]
    """The Docker volume's name (the container mounts it by this name)."""
    driver_opts: pulumi.Input[Mapping[str, pulumi.Input[str]]]
    """type=nfs, o=addr=...,<options>, device=:<export> (gpufleet.derive.container.nas_volume)."""
    labels: Mapping[str, str]
    """Docker labels (cluster, host); plain strings, known before any deployment."""


class NasVolume(pulumi.ComponentResource):
    """Pass the host's Docker provider in opts.providers; the volume inherits it."""

    name: pulumi.Output[str]

    def __init__(self, name: str, args: NasVolumeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RESOURCE_TYPE, name, None, opts)
        labels = [docker.VolumeLabelArgs(label=k, value=v) for k, v in args["labels"].items()]
        volume = docker.Volume(
            f"{name}-volume",
            name=args["volume_name"],
            driver="local",
            driver_opts=args["driver_opts"],
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = volume.name
        self.register_outputs({"name": self.name})
