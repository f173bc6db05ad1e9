"""ContainerSettings -> pulumi-docker ``Container`` keyword arguments. Pure: no resources.

The renderer turns the same ContainerSettings into the compose service
(gpufleet/templates/docker-compose.yml.j2); tests compare the two field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_docker as docker

from gpufleet.derive.container import ContainerSettings

MIB = 1024**2
NVIDIA_DRIVER = "nvidia"


def shm_size_mib(settings: ContainerSettings) -> int | None:
    """pulumi-docker's shm_size is in MiB; the settings carry bytes."""
    if settings.shm_size_bytes is None:
        return None
    return max(settings.shm_size_bytes // MIB, 1)


def env_list(settings: ContainerSettings) -> list[str]:
    return [f"{key}={value}" for key, value in settings.env.items()]


def device_requests(settings: ContainerSettings) -> list[docker.ContainerDeviceRequestArgs]:
    """The host's GPUs by count, like compose's ``deploy.resources.reservations.devices``.

    ``gpus`` only takes "all" or device ids; a count is a device request with
    the nvidia driver (what ``docker run --gpus N`` sends).
    """
    if settings.gpus == 0:
        return []
    return [
        docker.ContainerDeviceRequestArgs(driver=NVIDIA_DRIVER, count=settings.gpus, capabilities=["gpu"])
    ]


def container_args(
    settings: ContainerSettings,
    *,
    image: pulumi.Input[str],
    config_contents: Mapping[str, pulumi.Input[str]],
    volume_names: Mapping[str, pulumi.Input[str]],
    peers_host_dir: str,
) -> dict[str, Any]:
    """Keyword arguments for ``docker.Container``.

    ``config_contents`` maps each ConfigFile role (sshd_config, authorized_keys,
    ssh_host_ed25519_key) to its content; they are uploaded, not bind-mounted:
    they are the container's own. ``volume_names`` maps each volume's name (NAS
    shares, the workspace) to the Volume resource's name output (for the
    dependency). ``peers_host_dir``: the host folder with the cluster's peers
    file, mounted read-only (its content is not an argument: a host added to the
    cluster changes no container).
    """
    missing = {f.role for f in settings.config_files} - set(config_contents)
    if missing:
        raise ValueError(f"no content for config files {sorted(missing)}")
    health = settings.healthcheck
    args: dict[str, Any] = {
        "name": settings.name,
        "hostname": settings.hostname,
        "image": image,
        "network_mode": settings.network_mode,
        "restart": settings.restart,
        "must_run": True,
        "envs": env_list(settings),
        "uploads": [
            docker.ContainerUploadArgs(
                file=file.container_path,
                content=config_contents[file.role],
                permissions=f"{file.mode:04o}",
            )
            for file in settings.config_files
        ],
        "volumes": [
            docker.ContainerVolumeArgs(
                volume_name=volume_names[volume.name],
                container_path=volume.mount,
                read_only=volume.read_only,
            )
            for volume in (*settings.volumes, settings.workspace)
        ]
        + [
            docker.ContainerVolumeArgs(
                host_path=peers_host_dir, container_path=settings.peers_dir, read_only=True
            )
        ],
        "healthcheck": docker.ContainerHealthcheckArgs(
            tests=list(health.test),
            interval=f"{health.interval_s}s",
            timeout=f"{health.timeout_s}s",
            retries=health.retries,
            start_period=f"{health.start_period_s}s",
        ),
        "labels": [
            docker.ContainerLabelArgs(label=key, value=value) for key, value in settings.labels.items()
        ],
    }
    if settings.ipc_mode:
        args["ipc_mode"] = settings.ipc_mode
    shm = shm_size_mib(settings)
    if shm:
        args["shm_size"] = shm
    if settings.memlock_bytes is not None:
        limit = settings.memlock_bytes
        args["ulimits"] = [docker.ContainerUlimitArgs(name="memlock", soft=limit, hard=limit)]
    if settings.cap_add:
        args["capabilities"] = docker.ContainerCapabilitiesArgs(adds=list(settings.cap_add))
    if settings.devices:
        args["devices"] = [
            docker.ContainerDeviceArgs(host_path=device, container_path=device) for device in settings.devices
        ]
    requests = device_requests(settings)
    if requests:
        args["device_requests"] = requests
    return args
