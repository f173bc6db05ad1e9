"""The steps of `up`, each small and named; the provisioner runs them in order and rolls back.

A ``Build`` carries what the steps share. Every step that creates something
first writes it into the record (``build.record``), so the one teardown can
undo whatever a failed step left.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gpufleet.derive.container import IMAGE_PYTHON
from gpufleet.derive.nccl import nccl_env
from gpufleet.derive.sshd import authorized_keys
from gpufleet.errors import GpufleetError
from gpufleet.inventory import Inventory, InventoryHost, write_state
from gpufleet.local import containers, docker_hosts, dockerd, hostproc, images, logins, netns
from gpufleet.local.accounts import LoginAccount
from gpufleet.local.keys import KeyPair, generate_ed25519
from gpufleet.local.names import ControllerAddress, host_namespace
from gpufleet.local.record import HostDaemon, LocalRecord, write_record
from gpufleet.render import render_cluster
from gpufleet.render.renderer import LOGIN_UID, RenderedTree
from gpufleet.render.templating import render_template
from gpufleet.spec.models import ClusterSpec

Progress = Callable[[str], None]
HOST_LOGIN_KNOWN_HOSTS = "host_known_hosts"
"""The pinned keys of the hosts' own logins (docker_ssh), beside the containers' known_hosts."""


@dataclass
class Build:
    spec: ClusterSpec
    folder: Path
    record: LocalRecord
    account: LoginAccount
    system: tuple[str, str, str]  # the machine's passwd, group, shadow
    controller: ControllerAddress
    python: str  # the process runtime's host Python (the controller's venv)
    progress: Progress
    login_timeout: float
    image: images.LocalImage | None = None
    controller_key: KeyPair = field(default_factory=generate_ed25519)
    host_keys: dict[str, KeyPair] = field(default_factory=dict)  # what the inventory pins
    login_keys: dict[str, KeyPair] = field(default_factory=dict)  # docker runtime: the hosts' own logins
    leases: dict[str, docker_hosts.Lease] = field(default_factory=dict)
    tree: RenderedTree = field(default_factory=dict)

    @property
    def docker(self) -> bool:
        return self.spec.local.runtime == "docker"

    def save(self) -> None:
        write_record(self.folder, self.record)


Step = tuple[str, Callable[[Build], None]]


def run_steps(build: Build, steps: list[Step]) -> None:
    """Each step is announced, and its time reported when it is done."""
    for name, step in steps:
        build.progress(name)
        started = time.monotonic()
        step(build)
        build.progress(f"{name}: done in {time.monotonic() - started:.1f} s")


# --- shared by both runtimes -------------------------------------------------------------


def make_keys(build: Build) -> None:
    build.host_keys = {h.name: generate_ed25519() for h in build.spec.hosts}
    if build.docker:
        build.login_keys = {h.name: generate_ed25519() for h in build.spec.hosts}


def render_files(build: Build) -> None:
    """The RENDERED tree, with the local runtime's named differences for the compose files."""
    spec = build.spec
    if build.docker:
        assert build.image is not None
        folders = {f"{spec.name}-{s.name}": hostproc.nas_source(build.folder, s.name) for s in spec.nas}
        workspaces = {h.name: hostproc.workspace_folder(build.folder, h.name) for h in spec.hosts}
        adjust = containers.local_adjustment(
            build.image.tag, folders, containers.allowed_memlock(), workspaces
        )
        build.tree = render_cluster(spec, adjust=adjust)
    else:
        build.tree = render_cluster(spec)


def write_nas(build: Build) -> None:
    """The NAS stand-ins and the hosts' workspaces: kept from an earlier `up` (the data is the
    user's), made if new; a workspace belongs to the container's login user, as the image's does."""
    for share in build.spec.nas:
        source = hostproc.nas_source(build.folder, share.name)
        source.mkdir(parents=True, exist_ok=True)
        owner = LOGIN_UID if build.docker else build.account.uid  # who writes: the container's user
        os.chown(source, owner, owner if build.docker else build.account.gid)
        os.chmod(source, 0o755)  # noqa: S103 - a share, like an NFS export's root
        if not build.docker and hostproc.machine_mountpoint(share.mount):
            hostproc.ensure_mountpoint(share.mount)  # bind-mounted over on every host
    for host in build.spec.hosts if build.docker else ():
        folder = hostproc.workspace_folder(build.folder, host.name)
        if not folder.is_dir():
            folder.mkdir(parents=True)
            os.chown(folder, LOGIN_UID, LOGIN_UID)


def write_files(build: Build) -> None:
    write_nas(build)
    write_host_files(build)


def write_host_files(build: Build) -> None:
    spec = build.spec
    controller_line = build.controller_key.public_line(f"gpufleet-{spec.name}")
    keys_file = authorized_keys(spec, extra_keys=(controller_line,))
    for host in spec.hosts:
        paths = hostproc.host_paths(build.folder, host.name)
        rendered = {"nftables.conf": build.tree[PurePosixPath("hosts", host.name, "nftables.conf")]}
        if build.docker:
            socket = docker_hosts.run_dir(spec.name, host.name) / "docker.sock"
            settings = containers.host_login_settings(spec, build.account.user, f"unix://{socket}")
            rendered["sshd_config"] = render_template(
                "sshd_config.j2", cluster=spec.name, host=host.name, settings=settings
            )
            rendered["authorized_keys"] = controller_line + "\n"
            login = hostproc.LoginFiles(
                containers.HOST_SSHD_CONFIG, containers.HOST_AUTHORIZED_KEYS, containers.HOST_HOST_KEY
            )
            key = build.login_keys[host.name]
        else:
            rendered["sshd_config"] = build.tree[PurePosixPath("hosts", host.name, "sshd_config")]
            rendered["authorized_keys"] = keys_file
            login = hostproc.CONTAINER_LOGIN
            key = build.host_keys[host.name]
        hostproc.prepare_host(spec, host, paths, rendered, key, build.account, build.system, login)


def build_lan(build: Build) -> None:
    netns.apply(netns.lan_plan(build.spec, build.controller))


def inventory(build: Build) -> Inventory:
    """The same format `gpufleet inventory` writes from Pulumi outputs."""
    spec = build.spec
    return Inventory(
        cluster=spec.name,
        provisioner="local",
        hosts=[
            InventoryHost(
                name=h.name,
                address=h.address,
                ssh_address=h.address,
                ssh_port=spec.ssh.port,
                user=spec.ssh.user,
                host_key=build.host_keys[h.name].public_openssh,
                python=IMAGE_PYTHON if build.docker else build.python,
            )
            for h in spec.hosts
        ],
        image_digest=spec.image.digest,
        manifest_digest=build.image.manifest_digest if build.image else None,
        image_id=build.image.id if build.image else None,
        lock_digest=build.image.lock_digest if build.image else None,
        nccl_env={h.name: dict(nccl_env(spec, h).env) for h in spec.hosts},
    )


def verify_logins(build: Build) -> None:
    """A real key login on every host runs the launcher's Python as the login user."""
    pids = dict(build.record.pids)
    try:
        logins.verify_all(
            inventory(build).hosts,
            build.controller_key.private_openssh,
            alive=lambda name: not hostproc.host_exited(pids[name]),
            timeout=build.login_timeout,
        )
    except GpufleetError as error:
        raise GpufleetError(f"{error}{_log_tails(build)}") from None


def write_inventory(build: Build) -> None:
    write_state(build.folder, inventory(build), build.controller_key.private_openssh)


def _log_tails(build: Build) -> str:
    tails = []
    for host in build.spec.hosts:
        try:
            log = hostproc.host_paths(build.folder, host.name).log
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if lines:
            tails.append(f"\n  {host.name} sshd log: " + "\n    ".join(lines[-5:]))
    if build.docker:
        tails.append(docker_hosts.container_log_tails(build.spec, host_logins(build), _key(build)))
    return "".join(tails)


# --- process runtime ----------------------------------------------------------------------


def start_process_hosts(build: Build) -> None:
    for host in build.spec.hosts:
        paths = hostproc.host_paths(build.folder, host.name)
        script = hostproc.start_script(build.spec, host, paths, build.folder)
        namespace = host_namespace(build.spec.name, host.name)
        build.record.pids[host.name] = hostproc.start_host(namespace, script, paths.log)
    build.save()


PROCESS_STEPS: list[Step] = [
    ("generating keys", make_keys),
    ("rendering the cluster's files", render_files),
    ("writing the NAS stand-ins and host files", write_files),
    ("building the LAN", build_lan),
    ("starting sshd on every host", start_process_hosts),
    ("verifying key logins", verify_logins),
    ("writing the inventory", write_inventory),
]


# --- docker runtime -----------------------------------------------------------------------


def _key(build: Build) -> str:
    return build.controller_key.private_openssh


def host_logins(build: Build) -> dict[str, InventoryHost]:
    """Each host's own login (docker_ssh), pinned to its generated host key."""
    spec = build.spec
    return {
        h.name: InventoryHost(
            name=h.name,
            address=h.address,
            ssh_address=h.address,
            ssh_port=spec.ssh.host_port,
            user=build.account.user,
            host_key=build.login_keys[h.name].public_openssh,
        )
        for h in spec.hosts
        if h.name in build.login_keys
    }


def lease_daemons(build: Build) -> None:
    cache = images.cache_dir()
    for host in build.spec.hosts:
        lease = docker_hosts.lease_data_root(cache, host.name)
        build.leases[host.name] = lease
        paths = docker_hosts.daemon_paths(lease.data_root, build.spec.name, host.name)
        build.record.daemons[host.name] = HostDaemon(
            data_root=str(paths.data_root),
            run_dir=str(paths.run_dir),
            cgroup_parent=docker_hosts.cgroup_parent(build.spec.name, host.name),
        )
    build.save()


def _paths(build: Build, host: str) -> dockerd.DaemonPaths:
    daemon = build.record.daemons[host]
    return dockerd.DaemonPaths(data_root=Path(daemon.data_root), run_dir=Path(daemon.run_dir))


def start_docker_hosts(build: Build) -> None:
    """Each host: firewall, its own dockerd (holding its lease) and its own login sshd."""
    spec = build.spec
    try:
        for host in spec.hosts:
            paths = hostproc.host_paths(build.folder, host.name)
            daemon = _paths(build, host.name)
            docker_hosts.prepare_run_dir(daemon)
            argv = dockerd.daemon_argv(
                daemon, group=build.account.gid, cgroup_parent=build.record.daemons[host.name].cgroup_parent
            )
            script = hostproc.docker_start_script(spec, host, paths, argv, containers.HOST_SSHD_CONFIG)
            namespace = host_namespace(spec.name, host.name)
            lease = build.leases[host.name]
            build.record.pids[host.name] = hostproc.start_host(
                namespace,
                script,
                paths.log,
                argv=hostproc.docker_start_argv(namespace, script),
                keep_fds=(lease.fd,),
            )
            build.save()
    finally:
        for lease in build.leases.values():
            os.close(lease.fd)  # the hosts' daemons hold the leases now
        build.leases.clear()
    pids = dict(build.record.pids)
    docker_hosts.wait_daemons(
        {h.name: _paths(build, h.name) for h in spec.hosts},
        alive=lambda name: not hostproc.host_exited(pids[name]),
        logs={h.name: hostproc.host_paths(build.folder, h.name).dockerd_log for h in spec.hosts},
    )


def load_images(build: Build) -> None:
    """Into each host's daemon, unless its leased data-root has the image already (the cache)."""
    assert build.image is not None
    image = build.image

    def one(host: str) -> None:
        paths = _paths(build, host)
        pid = docker_hosts.daemon_pid(paths)
        assert pid is not None
        daemon = dockerd.Daemon(pid, paths)
        docker_hosts.remove_containers(daemon)  # a leased data-root may hold a dead cluster's
        step = images.load_into(image, daemon, host, build.progress)
        build.progress(
            f"{host}: image {'already loaded' if step.cached else f'loaded in {step.seconds:.1f} s'}"
        )

    docker_hosts._all(one, [h.name for h in build.spec.hosts])


def write_login_known_hosts(build: Build) -> None:
    text = "".join(login.known_hosts_line() + "\n" for login in host_logins(build).values())
    (build.folder / HOST_LOGIN_KNOWN_HOSTS).write_text(text)


def wait_host_logins(build: Build) -> None:
    write_login_known_hosts(build)
    pids = dict(build.record.pids)
    deadline = time.monotonic() + build.login_timeout
    for login in host_logins(build).values():
        alive = functools.partial(_alive, pids[login.name])
        logins.wait_for_port(login.ssh_address, login.ssh_port, deadline, alive)


def _alive(pid: int) -> bool:
    return not hostproc.host_exited(pid)


def deploy_containers(build: Build) -> None:
    spec = build.spec
    controller_line = build.controller_key.public_line(f"gpufleet-{spec.name}")
    keys_file = authorized_keys(spec, extra_keys=(controller_line,))
    files = {
        h.name: docker_hosts.deploy_files(build.tree, h, keys_file, build.host_keys[h.name].private_openssh)
        for h in spec.hosts
    }
    docker_hosts.compose_up_all(spec, host_logins(build), _key(build), files, build.progress)


DOCKER_STEPS: list[Step] = [
    ("generating keys", make_keys),
    ("rendering the cluster's files", render_files),
    ("writing the NAS stand-ins and host files", write_files),
    ("leasing a Docker data-root per host", lease_daemons),
    ("building the LAN", build_lan),
    ("starting each host's firewall, Docker daemon and login", start_docker_hosts),
    ("loading the training image into each host's daemon", load_images),
    ("waiting for each host's login", wait_host_logins),
    ("deploying each host's compose folder over SSH", deploy_containers),
    ("verifying key logins into the containers", verify_logins),
    ("writing the inventory", write_inventory),
]
