"""The training container of one host, as a small backend-neutral value.

The renderer expresses it as a docker-compose service and the Pulumi program as
pulumi-docker Container arguments: both read this, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.derive.nccl import NcclEnv
from gpufleet.derive.sshd import AUTHORIZED_KEYS_PATH, HOST_KEY_PATH, SSHD_CONFIG_PATH
from gpufleet.spec.models import ClusterSpec, HostSpec, NasShare

CONTAINER_NAME = "gpufleet-train"
RESTART_POLICY = "unless-stopped"
INFINIBAND_DEVICE = "/dev/infiniband"
GIB = 1024**3


@dataclass(frozen=True)
class NasVolume:
    """A Docker volume backed by an NFS share (local driver, type nfs)."""

    name: str
    mount: str
    read_only: bool
    driver_opts: dict[str, str]


@dataclass(frozen=True)
class ConfigFile:
    """A rendered file placed read-only in the container (sshd_config, keys)."""

    role: str  # file name under hosts/<name>/ in the rendered tree
    container_path: str
    mode: int


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_s: int = 30
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
    memlock_unlimited: bool
    gpus: int  # GPUs reserved for the container; 0: none (CPU host)
    devices: tuple[str, ...]
    cap_add: tuple[str, ...]
    env: dict[str, str]
    volumes: tuple[NasVolume, ...]
    config_files: tuple[ConfigFile, ...]
    restart: str
    healthcheck: Healthcheck
    labels: dict[str, str]


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
        memlock_unlimited=box.memlock_unlimited,
        gpus=host.gpus,
        devices=(INFINIBAND_DEVICE,) if rdma else (),
        cap_add=("IPC_LOCK",) if rdma else (),
        env=env,
        volumes=tuple(nas_volume(spec, share) for share in spec.nas),
        config_files=CONFIG_FILES,
        restart=RESTART_POLICY,
        healthcheck=Healthcheck(
            test=("CMD-SHELL", f"bash -c '</dev/tcp/127.0.0.1/{spec.ssh.port}' || exit 1")
        ),
        labels={"gpufleet.cluster": spec.name, "gpufleet.host": host.name},
    )
