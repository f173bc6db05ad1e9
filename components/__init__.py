"""Pulumi components of a gpufleet cluster; ``__main__.py`` composes them via GpuCluster.

Components import ``gpufleet`` (spec, derivations, renderer); ``gpufleet``
never imports pulumi.
"""

from components.cluster_keys import ClusterKeys, ClusterKeysArgs
from components.gpu_cluster import GpuCluster, GpuClusterArgs
from components.gpu_host import GpuHost, GpuHostArgs
from components.host_firewall import HostFirewall, HostFirewallArgs
from components.nas_volume import NasVolume, NasVolumeArgs
from components.training_image import TrainingImage, TrainingImageArgs

__all__ = [
    "ClusterKeys",
    "ClusterKeysArgs",
    "GpuCluster",
    "GpuClusterArgs",
    "GpuHost",
    "GpuHostArgs",
    "HostFirewall",
    "HostFirewallArgs",
    "NasVolume",
    "NasVolumeArgs",
    "TrainingImage",
    "TrainingImageArgs",
]
