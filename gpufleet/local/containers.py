"""The docker runtime's differences from production, kept few, named and pure.

A local host runs the RENDERED compose file of its host, with exactly these
changes (``local_adjustment``), and nothing else:

- the image: the one built here from the rendered Dockerfile, by its local
  content tag (no registry can serve ``name@digest`` here);
- each NAS volume's driver options: a bind of the share's stand-in folder
  instead of an NFS mount (no kernel NFS here);
- the workspace volume's: a bind of the host's workspace folder beside the
  NAS stand-ins (the hosts' data-roots are shared between local clusters);
- memlock: capped at what this machine allows where it forbids unlimited
  (no CAP_SYS_RESOURCE); preflight warns about it.

Each host also gets its own login (the ``docker_ssh`` a real host has): a
hardened sshd on ``ssh.host_port`` whose sessions reach that host's daemon.
"""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Mapping
from pathlib import Path

from gpufleet.derive.container import UNLIMITED, ContainerSettings, NasVolume
from gpufleet.derive.sshd import sshd_settings
from gpufleet.render.renderer import ContainerAdjustment
from gpufleet.spec.models import ClusterSpec, HostSpec

HOST_SSH_DIR = "/etc/gpufleet/host-ssh"
HOST_SSHD_CONFIG = f"{HOST_SSH_DIR}/sshd_config"
HOST_AUTHORIZED_KEYS = f"{HOST_SSH_DIR}/authorized_keys"
HOST_HOST_KEY = f"{HOST_SSH_DIR}/ssh_host_ed25519_key"
DEPLOY_DIR = "gpufleet"
"""The host login's folder (under its home) that holds each cluster's deployed files."""


def allowed_memlock(limits: tuple[int, int] | None = None) -> int | None:
    """The memlock a container may ask for here: None when unlimited is allowed, else the hard limit."""
    _, hard = limits if limits is not None else resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if hard == resource.RLIM_INFINITY else hard


def local_volume(volume: NasVolume, folder: Path) -> NasVolume:
    """The same volume, backed by a bind of the share's stand-in folder instead of NFS."""
    return dataclasses.replace(volume, driver_opts={"type": "none", "o": "bind", "device": str(folder)})


def local_adjustment(
    image_tag: str, nas_folders: Mapping[str, Path], memlock_cap: int | None, workspaces: Mapping[str, Path]
) -> ContainerAdjustment:
    """``nas_folders`` maps each NAS volume's name (``<cluster>-<share>``) to its folder here,
    ``workspaces`` each host to its workspace folder (beside the NAS stand-ins: kept by ``down``)."""

    def adjust(host: HostSpec, settings: ContainerSettings) -> ContainerSettings:
        memlock = settings.memlock_bytes
        if memlock_cap is not None and (memlock == UNLIMITED or (memlock or 0) > memlock_cap):
            memlock = memlock_cap
        return dataclasses.replace(
            settings,
            image=image_tag,
            volumes=tuple(local_volume(v, nas_folders[v.name]) for v in settings.volumes),
            workspace=local_volume(settings.workspace, workspaces[host.name]),
            memlock_bytes=memlock,
        )

    return adjust


def host_login_settings(spec: ClusterSpec, user: str, docker_host: str) -> list[tuple[str, str]]:
    """sshd_config of the host's own login: the container's hardening, on ``ssh.host_port``.

    Its sessions get the host's daemon socket as DOCKER_HOST (on a real host, the default
    socket); no forwarding of any kind.
    """
    replaced = {
        "Port": str(spec.ssh.host_port),
        "HostKey": HOST_HOST_KEY,
        "AuthorizedKeysFile": HOST_AUTHORIZED_KEYS,
        "AllowUsers": user,
        "AllowTcpForwarding": "no",
    }
    settings = [(key, replaced.get(key, value)) for key, value in sshd_settings(spec)]
    return [*settings, ("SetEnv", f"DOCKER_HOST={docker_host}")]
