"""The training container of one host, as a small backend-neutral value.

The renderer expresses it as a docker-compose service and the Pulumi program as
pulumi-docker Container arguments: both read this, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.derive.nccl import NcclEnv
from gpufleet.derive.sshd import AUTHORIZED_KEYS_PATH, HOST_KEY_PATH, SSHD_CONFIG_PATH
from gpufleet.spec.models import ClusterSpec, HostSpec, NasShare

PEERS_DIR = "/etc/gpufleet/peers"
PEERS_FILE = "hosts"
"""``<address> <name>`` per cluster host; the entrypoint keeps /etc/hosts in step with it."""
WORKSPACE = "/workspace"
"""The login's working folder and JupyterLab's root, in the image and as a volume."""

CONTAINER_NAME = "gpufleet-train"
RESTART_POLICY = "unless-stopped"
INFINIBAND_DEVICE = "/dev/infiniband"
GIB = 1024**3
UNLIMITED = -1
"""A ulimit of -1: no limit."""
IMAGE_PYTHON = "/usr/local/bin/gpufleet-python"
"""The image's own Python (a wrapper the Dockerfile writes for the python on the base's PATH):
what the launcher runs on container hosts, whatever PATH a session gets."""
STAGING_DIR = "/etc/gpufleet/mounted"
"""Where config files arrive (bind mount or upload); the entrypoint installs each from here at
its path, owned by root with its fixed mode, whatever owner and mode the host's copy has."""
SESSION_ENV_PREFIXES = ("NCCL_", "GLOO_", "UCX_", "FI_", "RDMAV_", "CUDA_", "NVIDIA_", "TORCH_")
"""Variables of the container's environment that every SSH session gets too (sshd SetEnv, with
PATH and LD_LIBRARY_PATH): a plain ``ssh host CMD`` reads no profile."""
HEALTH_INTERVAL_S = 10


@dataclass(frozen=True)
class NasVolume:
    """A Docker volume of the local driver: an NFS share (type nfs), or the workspace (no options)."""

    name: str
    mount: str
    read_only: bool
    driver_opts: dict[str, str]


@dataclass(frozen=True)
class ConfigFile:
    """A rendered file placed read-only in the container (sshd_config, keys)."""

    role: str  # file name under hosts/<name>/ in the rendered tree
    path: str  # where sshd reads it, installed there by the entrypoint
    mode: int

    @property
    def container_path(self) -> str:
        """Where the file is mounted or uploaded (read by the entrypoint only)."""
        return f"{STAGING_DIR}/{self.role}"


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: int = HEALTH_INTERVAL_S
    timeout_s: int = 5
    retries: int = 3
    start_period_s: int = 10


@dataclass(frozen=True)
class ContainerSettings:
    name: str
    hostname: str
    image: str
    network_mode: str
    ipc_mode: str | None
    shm_size_bytes: int | None
    memlock_bytes: int | None  # the memlock ulimit (soft = hard); UNLIMITED, or None: the daemon's default
    gpus: int  # GPUs reserved for the container; 0: none (CPU host)
    devices: tuple[str, ...]
    cap_add: tuple[str, ...]
    env: dict[str, str]
    volumes: tuple[NasVolume, ...]
    workspace: NasVolume
    """/workspace (the login's working folder, JupyterLab's root): a named volume of its own, so
    notebooks survive a replaced container; ``down`` and ``pulumi destroy`` keep it."""
    config_files: tuple[ConfigFile, ...]
    restart: str
    healthcheck: Healthcheck
    labels: dict[str, str]
    peers_dir: str = PEERS_DIR
    """Where the container reads the cluster's host names (PEERS_FILE), mounted read-only from a
    folder on the host: with host networking and its own hostname the container resolves no host
    name otherwise (torch's rendezvous needs them). A file, not the container's arguments, so that
    a host added or removed changes no running container."""

    @property
    def memlock_unlimited(self) -> bool:
        return self.memlock_bytes == UNLIMITED


def nas_volume(spec: ClusterSpec, share: NasShare) -> NasVolume:
    options = [f"addr={share.server}", *share.options]
    if share.read_only:
        options.append("ro")
    return NasVolume(
        name=f"{spec.name}-{share.name}",
        mount=share.mount,
        read_only=share.read_only,
        driver_opts={"type": "nfs", "o": ",".join(options), "device": f":{share.export}"},
    )


def peer_hosts(spec: ClusterSpec) -> str:
    """The peers file: every cluster host's address and name (its own too: c10d resolves gethostname())."""
    return "".join(f"{host.address} {host.name}\n" for host in spec.hosts)


def host_peers_dir(cluster: str) -> str:
    """Where a production host keeps the peers file (Pulumi writes it; the container mounts it)."""
    return f"/etc/gpufleet/{cluster}/peers"


def workspace_volume(spec: ClusterSpec) -> NasVolume:
    return NasVolume(name=f"{spec.name}-workspace", mount=WORKSPACE, read_only=False, driver_opts={})


CONFIG_FILES = (
    ConfigFile("sshd_config", SSHD_CONFIG_PATH, 0o644),
    ConfigFile("authorized_keys", AUTHORIZED_KEYS_PATH, 0o644),
    ConfigFile("ssh_host_ed25519_key", HOST_KEY_PATH, 0o600),
)


def container_settings(spec: ClusterSpec, host: HostSpec, nccl: NcclEnv) -> ContainerSettings:
    # The fabric the host's probed facts resolved (fabric: auto) wins over the spec's.
    rdma = nccl.fabric in ("infiniband", "roce") if nccl.fabric else spec.network.is_rdma
    box = spec.container
    env = dict(nccl.env)
    if spec.jupyter.enabled:
        env["GPUFLEET_JUPYTER_PORT"] = str(spec.jupyter.port)
    return ContainerSettings(
        name=CONTAINER_NAME,
        hostname=host.name,
        image=spec.image.reference,
        network_mode=box.network_mode,
        ipc_mode="host" if box.ipc_host else None,
        shm_size_bytes=None if box.ipc_host else box.shm_size_gib * GIB,
        memlock_bytes=UNLIMITED if box.memlock_unlimited else None,
        gpus=host.gpus,
        devices=(INFINIBAND_DEVICE,) if rdma else (),
        cap_add=("IPC_LOCK",) if rdma else (),
        env=env,
        volumes=tuple(nas_volume(spec, share) for share in spec.nas),
        workspace=workspace_volume(spec),
        config_files=CONFIG_FILES,
        restart=RESTART_POLICY,
        healthcheck=healthcheck(spec.ssh.port),
        labels={"gpufleet.cluster": spec.name, "gpufleet.host": host.name},
    )


def healthcheck(port: int) -> Healthcheck:
    """sshd runs and listens on its port. Quiet: a TCP probe that closes before the SSH banner
    exchange would make sshd log ``kex_exchange_identification`` at every interval."""
    return Healthcheck(
        test=("CMD-SHELL", f"pgrep -x sshd >/dev/null && ss -Hltn 'sport = :{port}' | grep -q .")
    )
