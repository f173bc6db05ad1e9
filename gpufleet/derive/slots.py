"""Worker processes per host (torchrun --nproc-per-node, hostfile slots)."""

from __future__ import annotations

from gpufleet.spec.models import ClusterSpec, HostSpec


def host_slots(spec: ClusterSpec, host: HostSpec) -> int:
    """'auto' means one process per GPU, and one on a CPU-only host."""
    wanted = spec.training.nproc_per_node
    if wanted == "auto":
        return max(host.gpus, 1)
    return wanted
