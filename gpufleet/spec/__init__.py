"""The cluster spec: models, loading from stack files, and warnings."""

from gpufleet.spec.loader import load_spec, parse_spec, resolve_stack_file, spec_warnings
from gpufleet.spec.models import ClusterSpec, HostSpec, NasShare

__all__ = [
    "ClusterSpec",
    "HostSpec",
    "NasShare",
    "load_spec",
    "parse_spec",
    "resolve_stack_file",
    "spec_warnings",
]
