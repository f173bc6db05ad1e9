"""Render every file a cluster needs, deterministically (same spec, same bytes)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from gpufleet.derive.container import (
    CONFIG_FILES,
    IMAGE_PYTHON,
    PEERS_DIR,
    PEERS_FILE,
    SESSION_ENV_PREFIXES,
    STAGING_DIR,
    WORKSPACE,
    ContainerSettings,
    container_settings,
    peer_hosts,
)
from gpufleet.derive.firewall import PING_RATE, FirewallPlan, firewall_plan
from gpufleet.derive.nccl import NcclEnv, nccl_env
from gpufleet.derive.slots import host_slots
from gpufleet.derive.sshd import CONTAINER_SSH_DIR, SSHD_CONFIG_PATH, authorized_keys, sshd_settings
from gpufleet.environment.lockfile import Lock
from gpufleet.render.image_context import image_env_files, render_image_dockerfile
from gpufleet.render.templating import render_template
from gpufleet.spec.models import ClusterSpec, HostSpec

LOGIN_UID = 1000
PEERS_POLL_S = 5
"""How often a container re-reads the peers file: a host added resolves within seconds."""
EXECUTABLE = 0o755
FILE_MODE = 0o644
EXECUTABLES = frozenset({PurePosixPath("entrypoint.sh")})

RenderedTree = dict[PurePosixPath, str]


def render_sshd_config(spec: ClusterSpec, host: HostSpec) -> str:
    return render_template("sshd_config.j2", cluster=spec.name, host=host.name, settings=sshd_settings(spec))


def render_nftables(spec: ClusterSpec, host: HostSpec, plan: FirewallPlan) -> str:
    sets = [
        (name, family, elements)
        for name, family, elements in (
            ("peers_v4", "ipv4", plan.peers_v4),
            ("peers_v6", "ipv6", plan.peers_v6),
            ("admin_v4", "ipv4", plan.admin_v4),
            ("admin_v6", "ipv6", plan.admin_v6),
        )
        if elements  # nft refuses an empty 'elements = { }'
    ]
    return render_template(
        "nftables.conf.j2",
        cluster=spec.name,
        host=host.name,
        sets=sets,
        ssh_ports=plan.ssh_ports,
        ping_rate=PING_RATE,
    )


def render_nccl_env(nccl: NcclEnv) -> str:
    return render_template("nccl.env.j2", comments=nccl.comments, env=nccl.env)


def render_compose(spec: ClusterSpec, host: HostSpec, settings: ContainerSettings, nccl: NcclEnv) -> str:
    extra_env = {k: v for k, v in settings.env.items() if k not in nccl.env}
    return render_template(
        "docker-compose.yml.j2", cluster=spec.name, host=host.name, c=settings, extra_env=extra_env
    )


def render_dockerfile(spec: ClusterSpec, lock: Lock, lock_name: str = "the stack's lock") -> str:
    """The Dockerfile that installs exactly ``lock`` (there is none without one: nothing unpinned)."""
    common: dict[str, object] = {
        "cluster": spec.name,
        "user": spec.ssh.user,
        "uid": LOGIN_UID,
        "ssh_dir": CONTAINER_SSH_DIR,
        "staging_dir": STAGING_DIR,
        "workspace": WORKSPACE,
        "python": IMAGE_PYTHON,
    }
    return render_image_dockerfile(common, lock, lock_name)


def render_image_context(spec: ClusterSpec, lock: Lock, lock_name: str = "the stack's lock") -> RenderedTree:
    """What the image is built from: Dockerfile, entrypoint.sh, gpufleet-env/."""
    return {
        PurePosixPath("Dockerfile"): render_dockerfile(spec, lock, lock_name),
        PurePosixPath("entrypoint.sh"): render_entrypoint(spec),
        **image_env_files(lock),
    }


def render_entrypoint(spec: ClusterSpec) -> str:
    return render_template(
        "entrypoint.sh.j2",
        cluster=spec.name,
        user=spec.ssh.user,
        ssh_port=spec.ssh.port,
        sshd_config=SSHD_CONFIG_PATH,
        staging_dir=STAGING_DIR,
        config_files=CONFIG_FILES,
        session_env_prefixes=SESSION_ENV_PREFIXES,
        workspace=WORKSPACE,
        peers_file=f"{PEERS_DIR}/{PEERS_FILE}",
        peers_poll_s=PEERS_POLL_S,
    )


def render_hostfile(spec: ClusterSpec) -> str:
    hosts = [{"address": h.address, "slots": host_slots(spec, h)} for h in spec.hosts]
    return render_template("hostfile.j2", hosts=hosts)


ContainerAdjustment = Callable[[HostSpec, ContainerSettings], ContainerSettings]


def render_cluster(
    spec: ClusterSpec,
    nccl_envs: Mapping[str, NcclEnv] | None = None,
    adjust: ContainerAdjustment | None = None,
    lock: Lock | None = None,
    lock_name: str = "the stack's lock",
) -> RenderedTree:
    """Every file of the cluster, keyed by its path in the output tree.

    ``nccl_envs`` (host name -> env) replaces the spec-only NCCL derivation,
    e.g. with one refined by probed host facts. ``adjust`` changes a host's
    container settings before its compose file is rendered (the local
    runtime's few differences from production; never used for production files).
    ``lock`` (the stack's lock) adds the image's build context; without one there is none.
    """
    plan = firewall_plan(spec)  # identical on every host: derive it once
    keys = authorized_keys(spec)
    tree: RenderedTree = {
        PurePosixPath("entrypoint.sh"): render_entrypoint(spec),
        PurePosixPath("hostfile"): render_hostfile(spec),
        PurePosixPath("peers", PEERS_FILE): peer_hosts(spec),
    }
    if lock is not None:  # the image's files only with a lock: nothing in the image is unpinned
        tree.update(render_image_context(spec, lock, lock_name))
    for host in spec.hosts:
        nccl = (nccl_envs or {}).get(host.name) or nccl_env(spec, host)
        settings = container_settings(spec, host, nccl)
        if adjust is not None:
            settings = adjust(host, settings)
        folder = PurePosixPath("hosts", host.name)
        tree[folder / "sshd_config"] = render_sshd_config(spec, host)
        tree[folder / "authorized_keys"] = keys
        tree[folder / "nftables.conf"] = render_nftables(spec, host, plan)
        tree[folder / "nccl.env"] = render_nccl_env(nccl)
        tree[folder / "docker-compose.yml"] = render_compose(spec, host, settings, nccl)
    return tree


def file_mode(relative: PurePosixPath) -> int:
    """Fixed modes, whatever the umask: sshd refuses an authorized_keys others can write."""
    return EXECUTABLE if relative in EXECUTABLES else FILE_MODE


def write_tree(tree: RenderedTree, out: Path) -> list[Path]:
    """Write the tree under ``out``; files are replaced atomically, nothing else is touched."""
    written = []
    for relative, text in sorted(tree.items()):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, file_mode(relative))
        os.replace(temporary, path)
        written.append(path)
    return written
