"""The torchrun command line and environment for one host of a run.

Pure: the launcher ships the result to the host. c10d rendezvous runs on
hosts[0]; ``is_host`` is set explicitly so that no host has to guess from its
own addresses whether it serves the store, and every run gets its own
``--rdzv-id`` (a stale store from an earlier run must never be reused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpufleet.derive.nccl import nccl_env
from gpufleet.derive.slots import host_slots
from gpufleet.spec.models import ClusterSpec, HostSpec

# A broken rendezvous (firewall, a host that never starts) fails in about this
# long instead of torch's 600 s join default.
DEFAULT_JOIN_TIMEOUT_S = 120
DEFAULT_READ_TIMEOUT_S = 60
# A node whose rendezvous keep-alive stops counts as dead after interval x attempts
# (torch's default: 5 s x 3). A job re-forms on the survivors only once the dead node
# is out of the rendezvous, so this bounds how soon an elastic job trains again.
KEEP_ALIVE_INTERVAL_S = 2
KEEP_ALIVE_MAX_ATTEMPT = 3
# With fewer than --nnodes MAX hosts, a round waits this long for more to join.
LAST_CALL_TIMEOUT_S = 5
# torch expands ${rank} per worker line: "[rank3]: ..." in the host's log.
LOG_LINE_PREFIX = "[rank${rank}]:"


@dataclass(frozen=True)
class RunSettings:
    """What one run adds to the spec: its id, what to start, where its files go."""

    run_id: str
    script: str
    script_args: tuple[str, ...] = ()
    run_dir: str = "."
    nproc_per_node: int | None = None
    join_timeout_s: int = DEFAULT_JOIN_TIMEOUT_S
    read_timeout_s: int = DEFAULT_READ_TIMEOUT_S


@dataclass(frozen=True)
class TorchrunCommand:
    argv: tuple[str, ...]
    env: dict[str, str]


def rdzv_endpoint(spec: ClusterSpec) -> str:
    address = spec.hosts[0].address
    if ":" in address:  # IPv6
        address = f"[{address}]"
    return f"{address}:{spec.network.rdzv_port}"


def min_hosts(spec: ClusterSpec) -> int:
    """The fewest hosts the job continues on (``training.min_hosts``; default every host)."""
    return spec.training.min_hosts or len(spec.hosts)


def nnodes(spec: ClusterSpec) -> str:
    """``N``, or ``MIN:MAX`` when the job may continue on fewer hosts (elastic)."""
    low, high = min_hosts(spec), len(spec.hosts)
    return str(high) if low == high else f"{low}:{high}"


def nproc_for(spec: ClusterSpec, host: HostSpec, override: int | None = None) -> int:
    return override if override is not None else host_slots(spec, host)


def run_tag(cluster: str, run_id: str, host: HostSpec) -> str:
    """Marks every process of this run on this host (env), so stop can find all of them.

    The cluster is part of it: two local clusters on one machine share the login
    uid, and stopping run X on one must not touch a run X of the other.
    """
    return f"{cluster}/{run_id}@{host.name}"


def torchrun_command(
    spec: ClusterSpec,
    host: HostSpec,
    run: RunSettings,
    python: str,
    nccl: Mapping[str, str] | None = None,
) -> TorchrunCommand:
    """``<python> -m torch.distributed.run ...`` for ``host``, with its env (NCCL/gloo included).

    ``nccl``: the NCCL env the host was set up with (the inventory's, which may be
    refined by probed facts); without it, the spec-only derivation.
    """
    is_host = host.name == spec.hosts[0].name
    rdzv_conf = (
        f"join_timeout={run.join_timeout_s},read_timeout={run.read_timeout_s},"
        f"last_call_timeout={LAST_CALL_TIMEOUT_S},keep_alive_interval={KEEP_ALIVE_INTERVAL_S},"
        f"keep_alive_max_attempt={KEEP_ALIVE_MAX_ATTEMPT},is_host={str(is_host).lower()}"
    )
    argv = (
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes(spec)}",
        f"--nproc-per-node={nproc_for(spec, host, run.nproc_per_node)}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rdzv_endpoint(spec)}",
        f"--rdzv-id={run.run_id}",
        f"--rdzv-conf={rdzv_conf}",
        f"--max-restarts={spec.training.max_restarts}",
        "--tee=3",
        f"--log-dir={run.run_dir}/torchrun/{host.name}",
        run.script,
        *run.script_args,
    )
    env = dict(nccl) if nccl else dict(nccl_env(spec=spec, host=host).env)
    env.update(
        {
            "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": LOG_LINE_PREFIX,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            # Without this, every restart's workers meet in the one store the rendezvous
            # host created for the first round, under the same keys: a restarted rank can
            # read the address a dead rank of the last attempt left there and fail
            # ("Gloo connectFullMesh failed ... Connection refused"). Off, each round's
            # rank 0 serves a fresh store on a fresh port (MASTER_PORT).
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            "GPUFLEET_RUN": run.run_id,
            "GPUFLEET_RUN_DIR": run.run_dir,
            "GPUFLEET_HOST": host.name,
            "GPUFLEET_RUN_TAG": run_tag(spec.name, run.run_id, host),
        }
    )
    return TorchrunCommand(argv=argv, env=env)
