"""NCCL environment per host.

Spec-only for now: the host's declared interface and HCAs. Probed host facts
(``gpufleet probe``) refine it; the function keeps the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpufleet.spec.models import ClusterSpec, HostSpec

# NCCL matches SOCKET_IFNAME entries as prefixes; '^' excludes. Without '=',
# 'eth1' would also match 'eth10' (nccl-tests#9), hence '=' for exact names.
EXCLUDED_IFNAME_PREFIXES = ("lo", "docker", "veth", "virbr")
DEFAULT_DEBUG = "WARN"


@dataclass(frozen=True)
class NcclEnv:
    """The env for one host, plus comment lines for nccl.env and warnings for the user."""

    env: dict[str, str]
    comments: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def socket_ifname(host: HostSpec) -> str:
    if host.ifname:
        return f"={host.ifname}"
    return "^" + ",".join(EXCLUDED_IFNAME_PREFIXES)


def nccl_env(spec: ClusterSpec, host: HostSpec) -> NcclEnv:
    """Spec-only NCCL env: interface, fabric, HCAs, a quiet NCCL_DEBUG, then overrides."""
    env: dict[str, str] = {"NCCL_SOCKET_IFNAME": socket_ifname(host)}
    comments = [f"gpufleet: NCCL settings for host {host.name} (fabric: {spec.network.fabric})"]
    if host.ifname:
        # gloo (CPU ranks, and torch's own store traffic) takes an exact name only.
        env["GLOO_SOCKET_IFNAME"] = host.ifname
    if spec.network.fabric == "ethernet":
        env["NCCL_IB_DISABLE"] = "1"
    elif host.hcas:
        env["NCCL_IB_HCA"] = "=" + ",".join(host.hcas)
    if spec.network.is_rdma:
        if spec.network.ib_traffic_class is not None:
            env["NCCL_IB_TC"] = str(spec.network.ib_traffic_class)
        if spec.network.ib_service_level is not None:
            env["NCCL_IB_SL"] = str(spec.network.ib_service_level)
    env["NCCL_DEBUG"] = DEFAULT_DEBUG
    if spec.nccl:
        comments.append("user overrides from the spec's nccl section follow the derived values")
    env.update(spec.nccl)
    return NcclEnv(env=env, comments=tuple(comments))
