"""What goes into the image: gpufleet's own packages plus the team's, as one set of lock inputs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from gpufleet.spec.models import ClusterSpec

IMAGE_APT_PACKAGES = (
    "openssh-server",  # the launcher logs in
    # NCCL uses InfiniBand/RoCE inside the container only with these (without them it
    # silently falls back to TCP sockets, 5-10x slower).
    "rdma-core",
    "libibverbs1",
    "ibverbs-providers",
    "librdmacm1",
    "ibverbs-utils",
    "infiniband-diags",
    "iproute2",
    "procps",
    "ca-certificates",
)
IMAGE_PYTHON_PACKAGES = (
    "jupyterlab>=4,<5",  # gpufleet jupyter
    "tensorboard>=2.16",  # gpufleet tensorboard
    "py-spy>=0.3.14",  # stack samples of a hung rank
)
STAND_IN_BASE = "gpufleet/cpu-base"
"""What a lock names as its base when a local stack leaves image.base unset."""


class EnvironmentInputs(BaseModel):
    """Everything a lock is a function of, besides the index's contents and the base's own files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str  # image.base as written, or STAND_IN_BASE
    python_packages: tuple[str, ...]  # gpufleet's, then the team's
    apt_packages: tuple[str, ...]


def uses_stand_in_base(spec: ClusterSpec) -> bool:
    """A local stack that does not set image.base builds on the offline CPU stand-in."""
    return spec.provisioner == "local" and "base" not in spec.image.model_fields_set


def environment_inputs(spec: ClusterSpec) -> EnvironmentInputs:
    """gpufleet's own packages, then the team's (image.python_packages and image.apt_packages)."""
    return EnvironmentInputs(
        base=STAND_IN_BASE if uses_stand_in_base(spec) else spec.image.base,
        python_packages=(*IMAGE_PYTHON_PACKAGES, *spec.image.python_packages),
        apt_packages=(*IMAGE_APT_PACKAGES, *spec.image.apt_packages),
    )
