"""The lint rules. Each finding says why it matters and what to change.

Spec rules read the spec and what gpufleet derives from it (container
settings, the NCCL env); fact rules need ``gpufleet probe`` output; the
cross-host rules compare hosts' facts with each other. Spec and fact rules are
one function per finding, run in the order of ``SPEC_RULES`` and ``FACT_RULES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

from gpufleet.derive.container import GIB, INFINIBAND_DEVICE, container_settings
from gpufleet.derive.nccl import (
    ETHERNET,
    INFINIBAND,
    NcclEnv,
    gid_problem,
    hca_problem,
    ifname_entries,
    ifname_problem,
    is_virtual_ifname,
    nccl_env,
    usable_ports,
)
from gpufleet.errors import GpufleetError
from gpufleet.facts import HcaPort, HostFacts
from gpufleet.lint.findings import Finding, Severity, sort_key
from gpufleet.spec.models import ClusterSpec, HostSpec

MIN_SHM = GIB
DEBUG_LEVELS_TOO_LOUD = ("INFO", "TRACE")
# Overrides that need a stated reason (nccl_reasons), and the values that force something.
NEEDS_REASON: dict[str, Callable[[str], bool]] = {
    "NCCL_P2P_DISABLE": lambda value: value == "1",
    "NCCL_ALGO": bool,
    "NCCL_PROTO": bool,
}
_EXCLUDE_HINT = "=<the interface that carries the host's cluster address> (or leave it to gpufleet)"


def _f(severity: Severity, code: str, host: str | None, message: str, why: str, fix: str) -> Finding:
    return Finding(severity=severity, code=code, host=host, message=message, why=why, fix=fix)


# --- spec rules (whole cluster): one function per finding -------------------------------


def _bridge_network(spec: ClusterSpec) -> Iterator[Finding]:
    if spec.container.network_mode == "bridge":
        yield _f(
            "error",
            "bridge-network",
            None,
            "container.network_mode is bridge",
            "NCCL advertises the container's private 172.17.x address; peers cannot connect back "
            "(NVIDIA/nccl#331) and RDMA devices are not reachable through a bridge",
            "set container.network_mode: host",
        )


def _container_memlock(spec: ClusterSpec) -> Iterator[Finding]:
    if not spec.container.memlock_unlimited:
        yield _f(
            "error" if spec.network.fabric != "ethernet" else "warning",
            "memlock-limited",
            None,
            "container.memlock_unlimited is false",
            "RDMA registers pinned memory; Docker's 64 MiB memlock default makes ibv_reg_mr fail "
            "with 'Cannot allocate memory' (nccl-tests#206)",
            "set container.memlock_unlimited: true (ulimit memlock=-1)",
        )


def _container_shm(spec: ClusterSpec) -> Iterator[Finding]:
    box = spec.container
    if not box.ipc_host and box.shm_size_gib < 1:
        yield _f(
            "error",
            "shm-small",
            None,
            f"/dev/shm is {box.shm_size_gib} GiB and the host IPC namespace is not shared",
            "NCCL and DataLoader workers share memory through /dev/shm; under 1 GiB NCCL fails with "
            "'posix_fallocate ... No space left' (NVIDIA/nccl#342)",
            "set container.shm_size_gib: 16 (or container.ipc_host: true)",
        )


def _unexplained_overrides(spec: ClusterSpec) -> Iterator[Finding]:
    for key, is_forced in NEEDS_REASON.items():
        value = spec.nccl.get(key)
        if value is not None and is_forced(value) and key not in spec.nccl_reasons:
            yield _f(
                "warning",
                "unexplained-override",
                None,
                f"nccl.{key}={value} without a stated reason",
                "forcing NCCL off peer-to-peer or onto one algorithm/protocol often costs bandwidth "
                "long after the problem it worked around is gone",
                f"remove it, or say why under nccl_reasons: {{{key}: '...'}}",
            )


def _nccl_debug(spec: ClusterSpec) -> Iterator[Finding]:
    level = spec.nccl.get("NCCL_DEBUG", "").upper()
    if level in DEBUG_LEVELS_TOO_LOUD:
        yield _f(
            "warning",
            "nccl-debug",
            None,
            f"nccl.NCCL_DEBUG={level} is left on",
            "INFO/TRACE print on every rank and slow start-up; NCCL's docs say debug settings must "
            "not stay in production",
            "remove NCCL_DEBUG from nccl (gpufleet sets WARN); turn INFO on for one debugging run only",
        )


SpecRule = Callable[[ClusterSpec], Iterator[Finding]]
SPEC_RULES: tuple[SpecRule, ...] = (
    _bridge_network,
    _container_memlock,
    _container_shm,
    _unexplained_overrides,
    _nccl_debug,
)


def spec_rules(spec: ClusterSpec) -> Iterator[Finding]:
    for rule in SPEC_RULES:
        yield from rule(spec)


# --- per-host rules -----------------------------------------------------------------------


def env_rules(host: HostSpec, env: NcclEnv) -> Iterator[Finding]:
    """What the final env (derived + overrides) says, with or without facts."""
    value = env.env.get("NCCL_SOCKET_IFNAME", "")
    mode, names = ifname_entries(value)
    virtual = [n for n in names if is_virtual_ifname(n)]
    if mode != "^" and virtual:
        yield _f(
            "error",
            "socket-ifname-virtual",
            host.name,
            f"NCCL_SOCKET_IFNAME={value} selects {', '.join(virtual)}",
            "lo, docker, veth and virbr interfaces do not reach the other hosts: NCCL's bootstrap "
            "connections hang or are refused (NVIDIA/nccl#286, ray#26663)",
            f"set the host's ifname, or NCCL_SOCKET_IFNAME{_EXCLUDE_HINT}",
        )


# --- fact rules: one function per finding, over what one host's facts show -------------------


@dataclass(frozen=True)
class HostFactsContext:
    """One host's spec, probed facts and NCCL env, with the RDMA ports worked out once."""

    spec: ClusterSpec
    host: HostSpec
    facts: HostFacts
    env: NcclEnv

    @cached_property
    def ib(self) -> list[HcaPort]:
        return usable_ports(self.spec, self.host, self.facts, INFINIBAND)

    @cached_property
    def roce(self) -> list[HcaPort]:
        return usable_ports(self.spec, self.host, self.facts, ETHERNET)

    @property
    def rdma(self) -> list[HcaPort]:
        return self.ib + self.roce

    @property
    def used(self) -> list[HcaPort]:
        """The RDMA ports of the fabric the env uses (none on sockets)."""
        return {"infiniband": self.ib, "roce": self.roce}.get(self.env.fabric or "", [])

    @property
    def name(self) -> str:
        return self.host.name


def _ib_disabled(h: HostFactsContext) -> Iterator[Finding]:
    if h.rdma and h.env.env.get("NCCL_IB_DISABLE") == "1":
        deliberate = h.spec.network.fabric == "ethernet"
        yield _f(
            "warning" if deliberate else "error",
            "ib-disabled",
            h.name,
            f"NCCL_IB_DISABLE=1 while {len(h.rdma)} RDMA port(s) are ACTIVE ({', '.join(p.name for p in h.rdma)})",
            "NCCL then runs over TCP sockets: 5-10x slower (a 1 GB AllReduce 370 ms instead of 50 ms, "
            "AReaL#639)",
            "set network.fabric to infiniband, roce or auto and drop NCCL_IB_DISABLE from nccl",
        )


def _rdma_not_in_deployed_container(h: HostFactsContext) -> Iterator[Finding]:
    # What `pulumi up` deploys is derived from the spec alone (no facts): with fabric
    # auto that container would get no /dev/infiniband even where the facts show RDMA
    # (the program refuses 'auto' for that reason). `render --facts` is not affected.
    if h.spec.provisioner != "pulumi" or not h.used:
        return
    deployed = container_settings(h.spec, h.host, nccl_env(h.spec, h.host))
    if INFINIBAND_DEVICE not in deployed.devices:
        yield _f(
            "error",
            "rdma-not-in-container",
            h.name,
            f"the host has {len(h.used)} usable {h.env.fabric} port(s) but the container deployed from the "
            f"spec does not get {INFINIBAND_DEVICE} (network.fabric is {h.spec.network.fabric})",
            "without the uverbs devices NCCL finds no IB device and silently falls back to TCP "
            "sockets (NVIDIA/nccl#952)",
            f"set network.fabric: {h.env.fabric} so the container gets {INFINIBAND_DEVICE} and IPC_LOCK",
        )


def _no_uverbs_where_probed(h: HostFactsContext) -> Iterator[Finding]:
    uverbs = [d for d in h.facts.dev_infiniband or [] if d.startswith("uverbs")]
    if h.used and h.facts.source == "live" and not uverbs:
        # /dev/infiniband with rdma_cm only (seen on a GPU cloud VM) is no better than none.
        yield _f(
            "error",
            "rdma-not-in-container",
            h.name,
            f"RDMA ports are ACTIVE but {INFINIBAND_DEVICE} has no uverbs devices where the probe ran",
            "without the uverbs devices NCCL finds no IB device and silently falls back to TCP sockets",
            f"pass {INFINIBAND_DEVICE} to the container (docker --device) and redeploy",
        )


def _libibverbs_missing(h: HostFactsContext) -> Iterator[Finding]:
    facts = h.facts
    if h.used and (facts.libibverbs is None or not facts.ibverbs_providers):
        missing = "libibverbs" if facts.libibverbs is None else "an ibverbs provider (libmlx5)"
        yield _f(
            "error",
            "libibverbs-missing",
            h.name,
            f"RDMA ports are ACTIVE but {missing} is missing where the probe ran",
            "NCCL loads libibverbs at run time; without it (or its mlx5 provider) it falls back to TCP "
            "sockets with only an INFO line (dstack#2712)",
            "install ibverbs-providers and libibverbs1 (rdma-core) in the image",
        )


def _memlock_limited(h: HostFactsContext) -> Iterator[Finding]:
    memlock = h.facts.memlock
    if memlock is not None and not memlock.unlimited:
        yield _f(
            "error" if h.used else "warning",
            "memlock-limited",
            h.name,
            f"memlock limit is {memlock.soft} bytes, not unlimited",
            "RDMA registers pinned memory; a small memlock makes ibv_reg_mr fail (nccl-tests#206)",
            "run the container with --ulimit memlock=-1 (container.memlock_unlimited: true)",
        )


def _shm_small(h: HostFactsContext) -> Iterator[Finding]:
    shm = h.facts.shm_bytes
    if shm is not None and shm < MIN_SHM:
        yield _f(
            "error",
            "shm-small",
            h.name,
            f"/dev/shm is {shm // 2**20} MiB",
            "NCCL's shared-memory transport and DataLoader workers need more; under 1 GiB NCCL fails "
            "with 'No space left on device' (NVIDIA/nccl#290)",
            "run the container with --shm-size=16g or --ipc=host (container.shm_size_gib)",
        )


def _socket_ifname_missing(h: HostFactsContext) -> Iterator[Finding]:
    problem = ifname_problem(h.env.env.get("NCCL_SOCKET_IFNAME", ""), h.facts)
    if problem and "no such interface" in problem:
        yield _f(
            "error",
            "socket-ifname-missing",
            h.name,
            problem,
            "NCCL finds no interface to bootstrap on and aborts, or silently uses another one",
            f"set NCCL_SOCKET_IFNAME{_EXCLUDE_HINT}",
        )


def _hca_not_active(h: HostFactsContext) -> Iterator[Finding]:
    value = h.env.env.get("NCCL_IB_HCA")
    issue = hca_problem(value, h.facts) if value and h.used else None
    if issue:
        yield _f(
            "error",
            "hca-not-active",
            h.name,
            issue,
            "NCCL skips ports it cannot open; the job runs on fewer rails or falls back to sockets",
            "drop NCCL_IB_HCA from nccl and let gpufleet list the ACTIVE ports",
        )


def _roce_gid(h: HostFactsContext) -> Iterator[Finding]:
    value = h.env.env.get("NCCL_IB_GID_INDEX")
    if h.env.fabric != "roce" or value is None or not h.used:
        return
    try:
        issue = gid_problem(int(value), h.used)
    except ValueError:
        issue = f"NCCL_IB_GID_INDEX={value} is not a number"
    if issue:
        yield _f(
            "error",
            "roce-gid",
            h.name,
            issue,
            "a RoCE v1 or link-local GID is not routable across the fabric: connections time out "
            "with error 12 (NVIDIA/nccl#426, #1131)",
            "drop NCCL_IB_GID_INDEX from nccl (gpufleet pins the v2 cluster GID when NCCL < 2.21)",
        )


def _gpudirect_off(h: HostFactsContext) -> Iterator[Finding]:
    if h.used and (h.facts.gpus or h.host.gpus) and not h.facts.gpudirect_module:
        yield _f(
            "warning",
            "gpudirect-off",
            h.name,
            "nvidia_peermem is not loaded: no GPUDirect RDMA unless the driver provides it through DMA-BUF",
            "the NICs then read and write GPU memory through host memory, which costs bandwidth",
            "load it on the host: modprobe nvidia_peermem (and add it to /etc/modules-load.d)",
        )


def _gpu_count(h: HostFactsContext) -> Iterator[Finding]:
    gpus = h.facts.gpus
    if gpus is not None and len(gpus) != h.host.gpus:
        yield _f(
            "warning",
            "gpu-count",
            h.name,
            f"the spec says {h.host.gpus} GPU(s), nvidia-smi shows {len(gpus)}",
            "nproc_per_node and the container's GPU reservation follow the spec",
            f"set hosts.{h.name}.gpus: {len(gpus)}, or check the missing GPUs (nvidia-smi, dmesg)",
        )


def _nccl_derivation(h: HostFactsContext) -> Iterator[Finding]:
    for warning in h.env.warnings:
        if not warning.startswith("override "):
            yield _f(
                "warning",
                "nccl-derivation",
                h.name,
                warning,
                "what gpufleet derived differs from what the spec declares",
                "make the spec match the host (or fix the host)",
            )


FactRule = Callable[[HostFactsContext], Iterator[Finding]]
FACT_RULES: tuple[FactRule, ...] = (
    _ib_disabled,
    _rdma_not_in_deployed_container,
    _no_uverbs_where_probed,
    _libibverbs_missing,
    _memlock_limited,
    _shm_small,
    _socket_ifname_missing,
    _hca_not_active,
    _roce_gid,
    _gpudirect_off,
    _gpu_count,
    _nccl_derivation,
)


def fact_rules(spec: ClusterSpec, host: HostSpec, facts: HostFacts, env: NcclEnv) -> Iterator[Finding]:
    context = HostFactsContext(spec, host, facts, env)
    for rule in FACT_RULES:
        yield from rule(context)


# --- cross-host rules ---------------------------------------------------------------------


def _differ(what: str, values: Mapping[str, str]) -> Finding | None:
    by_value: dict[str, list[str]] = {}
    for host, value in sorted(values.items()):
        by_value.setdefault(value, []).append(host)
    if len(by_value) < 2:
        return None
    detail = "; ".join(f"{v}: {', '.join(hosts)}" for v, hosts in sorted(by_value.items()))
    return _f(
        "warning",
        "hosts-differ",
        None,
        f"hosts differ in {what} ({detail})",
        "collectives run at the pace of the slowest host, and per-host names break settings that "
        "assume one name everywhere (NVIDIA/nccl#286)",
        "fix the odd host (cabling, port state, naming), or take it out of the cluster",
    )


def _nccl_version(facts: HostFacts) -> str | None:
    return facts.torch.nccl_version if facts.torch else None


def cluster_rules(
    spec: ClusterSpec, envs: Mapping[str, NcclEnv], facts_by_host: Mapping[str, HostFacts]
) -> Iterator[Finding]:
    hosts = [h for h in spec.hosts if h.name in facts_by_host and h.name in envs]
    if len(hosts) < 2:
        return
    ports = {}
    for host in hosts:
        facts, env = facts_by_host[host.name], envs[host.name]
        kind = {"infiniband": INFINIBAND, "roce": ETHERNET}.get(env.fabric or "")
        ports[host.name] = usable_ports(spec, host, facts, kind) if kind else []
    compared = {
        "active HCA count": {name: str(len(used)) for name, used in ports.items()},
        "link rate": {
            name: ",".join(sorted({p.port.rate or "?" for p in used})) or "none"
            for name, used in ports.items()
        },
        "socket interface": {h.name: envs[h.name].env.get("NCCL_SOCKET_IFNAME", "") for h in hosts},
    }
    for what, values in compared.items():
        found = _differ(what, values)
        if found:
            yield found
    versions = {h.name: _nccl_version(facts_by_host[h.name]) for h in hosts}
    found = _differ("NCCL version", {name: v for name, v in versions.items() if v})
    if found:
        yield found.model_copy(
            update={
                "severity": "error",
                "code": "nccl-version-differs",
                "why": "NCCL versions must match across ranks; mixed versions hang or crash in the first "
                "collective (NVIDIA/nccl#286)",
                "fix": "pin the image by digest and pull it on every host",
            }
        )


# --- entry point ----------------------------------------------------------------------------


def lint(spec: ClusterSpec, facts_by_host: Mapping[str, HostFacts] | None = None) -> list[Finding]:
    """Every finding for ``spec``, errors first. Hosts without facts get the spec rules only."""
    facts_by_host = facts_by_host or {}
    findings = list(spec_rules(spec))
    envs: dict[str, NcclEnv] = {}
    for host in spec.hosts:
        facts = facts_by_host.get(host.name)
        try:
            env = nccl_env(spec, host, facts)
        except GpufleetError as error:
            findings.append(
                _f(
                    "error",
                    "fabric-contradiction",
                    host.name,
                    str(error),
                    "NCCL would silently fall back to TCP sockets or fail to start on this host",
                    "bring the ports up (ibstat, cabling, subnet manager) or change network.fabric",
                )
            )
            continue
        envs[host.name] = env
        findings += env_rules(host, env)
        if facts is not None:
            findings += fact_rules(spec, host, facts, env)
    findings += cluster_rules(spec, envs, facts_by_host)
    return sorted(findings, key=sort_key)
