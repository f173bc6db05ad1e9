"""The docker runtime for real: 2 hosts, each its own dockerd running the RENDERED image and compose
file, reached as production reaches it. Root only; the first run builds the images (minutes).

One cluster for the module (lt-docker, 10.240.0.0/24), with JupyterLab on and a 1 GiB /dev/shm.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from components.image_delivery import delivery_script
from components.remote_access import SshTarget
from gpufleet.cli.cluster_commands import ssh_argv
from gpufleet.derive.container import CONTAINER_NAME, IMAGE_PYTHON
from gpufleet.inventory import KEY_FILE, Inventory, InventoryHost, load_inventory, state_dir
from gpufleet.local import cluster_down, cluster_up, docker_hosts, dockerd, hostproc
from gpufleet.local.build import HOST_LOGIN_KNOWN_HOSTS
from gpufleet.local.images.builder import build_daemon
from gpufleet.local.images.cache import machine_lock
from gpufleet.local.logins import pinned_client
from gpufleet.local.names import host_namespace
from gpufleet.spec import ClusterSpec
from tests.conftest import PROJECT_ROOT, needs_root
from tests.local.cluster import lan_stranger, local_cluster
from tests.local.test_firewall_local import probe

pytestmark = [
    needs_root("ip", "sshd", "nft", "dockerd", "docker-compose", "nsenter"),
    pytest.mark.slow,
    pytest.mark.timeout(1500),
]

CLUSTER = "lt-docker"
OCTET = 240
STRANGER = f"10.{OCTET}.0.99"
GPUFLEET = str(Path(sys.executable).parent / "gpufleet")
EXAMPLE = PROJECT_ROOT / "examples" / "intent_classifier" / "train.py"
SHM_GIB = 1
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterSpec, Inventory, Path]]:
    folder = tmp_path_factory.mktemp("docker")
    (folder / "Pulumi.yaml").write_text("name: docker-test\nruntime: python\n")
    with local_cluster(
        folder,
        CLUSTER,
        OCTET,
        runtime="docker",
        jupyter={"enabled": True},
        container={"shm_size_gib": SHM_GIB},
    ) as (spec, inventory, stack):
        yield spec, inventory, stack


def _key(spec: ClusterSpec, stack: Path) -> paramiko.PKey:
    text = (state_dir(stack.parent, spec.name) / KEY_FILE).read_text()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(text))


def _ssh(
    stack: Path, spec: ClusterSpec, host: InventoryHost, command: str
) -> subprocess.CompletedProcess[str]:
    """A plain, non-interactive ``ssh host CMD`` with the system client: no profile is read."""
    argv = ssh_argv(host, state_dir(stack.parent, spec.name), [command])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_the_login_lands_in_the_container_as_the_spec_user(
    cluster: tuple[ClusterSpec, Inventory, Path],
) -> None:
    spec, inventory, stack = cluster
    for host in inventory.hosts:
        result = _ssh(stack, spec, host, "id -un; hostname; test -f /.dockerenv && echo in-docker")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [spec.ssh.user, host.name, "in-docker"]


def test_passwords_are_refused(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    _, inventory, _ = cluster
    host = inventory.hosts[0]
    transport = paramiko.Transport(socket.create_connection((host.ssh_address, host.ssh_port), timeout=5))
    try:
        transport.start_client(timeout=5)
        with pytest.raises(paramiko.BadAuthenticationType) as raised:
            transport.auth_password(host.user, "hunter2")
        assert raised.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_the_pinned_host_key_is_the_containers(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, stack = cluster
    host = inventory.hosts[0]
    client = pinned_client(host)  # RejectPolicy: connects only if the container shows the pinned key
    try:
        client.connect(host.ssh_address, port=host.ssh_port, username=host.user, pkey=_key(spec, stack))
        _, stdout, _ = client.exec_command("test -f /.dockerenv && echo in-docker")
        assert stdout.read().decode().strip() == "in-docker"
    finally:
        client.close()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("torchrun --help", id="torchrun"),
        pytest.param('python -c "import torch, numpy"', id="python-torch"),
        pytest.param('/usr/local/bin/gpufleet-python -c "import torch"', id="inventory-python"),
    ],
)
def test_plain_ssh_sessions_get_the_images_path(
    cluster: tuple[ClusterSpec, Inventory, Path], command: str
) -> None:
    spec, inventory, stack = cluster
    result = _ssh(stack, spec, inventory.hosts[1], command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_peers_names_resolve_in_every_container(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, stack = cluster
    for host in inventory.hosts:
        for peer in inventory.hosts:
            result = _ssh(stack, spec, host, f"getent hosts {peer.name}")
            assert result.stdout.split()[:1] == [peer.address], (host.name, peer.name, result.stderr)


def test_the_hosts_nccl_env_is_in_the_session(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, stack = cluster
    for host in inventory.hosts:
        expected = inventory.nccl_env[host.name]
        assert expected, "the local stack has an NCCL env"
        names = " ".join(shlex.quote(name) for name in expected)
        result = _ssh(
            stack, spec, host, f'for n in {names}; do printf \'%s=%s\\n\' "$n" "$(printenv $n)"; done'
        )
        got = dict(line.split("=", 1) for line in result.stdout.splitlines())
        assert got == expected, host.name


def test_dev_shm_has_the_specs_size(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, stack = cluster
    result = _ssh(stack, spec, inventory.hosts[0], "df -B1 --output=size /dev/shm | tail -1")
    assert int(result.stdout.strip()) == SHM_GIB * 1024**3


def test_a_ddp_job_trains_across_the_containers(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, _, stack = cluster
    result = subprocess.run(
        [GPUFLEET, "train", "-f", str(stack), str(EXAMPLE), "--epochs", "2"],
        cwd=stack.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"world_size=4\b|world size 4\b", result.stdout), result.stdout[-2000:]
    assert re.search(r"final val_accuracy=[0-9.]+", result.stdout), result.stdout[-2000:]
    # The run's record and checkpoints are on the NAS stand-in, written from inside the containers.
    runs = hostproc.nas_source(state_dir(stack.parent, spec.name), "checkpoints") / "gpufleet-runs"
    [record] = [json.loads(path.read_text()) for path in runs.glob("*/run.json")]
    # What ran: the lock the image installs, the manifest every host was checked against, the image.
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", record["lock_digest"])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", record["manifest_digest"])
    assert set(record["image_ids"]) == {h.name for h in spec.hosts}
    assert all(str(i).startswith("sha256:") for i in record["image_ids"].values())


def test_an_outsider_on_the_lan_reaches_nothing(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, _ = cluster
    node0 = inventory.hosts[0].address
    ports = [spec.ssh.port, spec.ssh.host_port, spec.jupyter.port, spec.network.rdzv_port]
    with lan_stranger(CLUSTER, STRANGER, 24, "gftstr240") as stranger:
        assert probe(host_namespace(CLUSTER, "node-1"), node0, spec.ssh.port) == "open"  # control
        assert {port: probe(stranger, node0, port) for port in ports} == dict.fromkeys(ports, "filtered")


def test_jupyter_listens_on_loopback_only(cluster: tuple[ClusterSpec, Inventory, Path]) -> None:
    spec, inventory, stack = cluster
    # From the controller (an admin address, which reaches SSH) Jupyter's port is not even open.
    assert probe(None, inventory.hosts[0].address, spec.jupyter.port) in ("closed", "filtered")
    result = _ssh(stack, spec, inventory.hosts[0], f"ss -Hltn 'sport = :{spec.jupyter.port}'")
    listening = {line.split()[3] for line in result.stdout.splitlines()}
    assert listening and listening <= {f"127.0.0.1:{spec.jupyter.port}"}, result.stdout


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make setup installs it)")
def test_jupyterlab_opens_in_a_browser_through_gpufleet_jupyter(
    cluster: tuple[ClusterSpec, Inventory, Path], tmp_path: Path
) -> None:
    _, inventory, stack = cluster
    port = _free_port()
    tunnel = subprocess.Popen(
        [GPUFLEET, "jupyter", "-f", str(stack), inventory.hosts[0].name, "--port", str(port)],
        cwd=stack.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert tunnel.stdout is not None
        url = ""
        deadline = time.monotonic() + 120
        while not url and time.monotonic() < deadline:
            line = tunnel.stdout.readline()
            assert line or tunnel.poll() is None, "gpufleet jupyter exited"
            found = re.search(r"(http://127\.0\.0\.1:\d+/\S*token=\S+)", line)
            url = found.group(1) if found else ""
        assert url.startswith(f"http://127.0.0.1:{port}/lab?token="), url
        assert CHROMIUM is not None
        browser = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=20000", "--dump-dom", url,
        ]  # fmt: skip
        dom = subprocess.run(
            browser,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert "<title>JupyterLab</title>" in dom.stdout, dom.stdout[-2000:] + dom.stderr[-2000:]
        assert "jp-LabShell" in dom.stdout, "JupyterLab's shell did not render"
    finally:
        tunnel.terminate()
        tunnel.wait(20)


def _drift(spec: ClusterSpec, host: str, remove: bool = False) -> None:
    """What a `sudo pip install` inside the running container leaves: one more distribution."""
    paths = docker_hosts.daemon_paths(Path("/unused"), spec.name, host)
    script = (
        "import pathlib, shutil, sysconfig; "
        "d = pathlib.Path(sysconfig.get_paths()['purelib']) / 'drifted-1.0.dist-info'; "
        + (
            "shutil.rmtree(d)"
            if remove
            else "d.mkdir(); (d / 'METADATA').write_text('Metadata-Version: 2.1\\nName: drifted\\nVersion: 1.0\\n')"
        )
    )
    argv = [
        dockerd.DOCKER_CLI,
        "--host",
        paths.host_url,
        "exec",
        "-u",
        "0",
        CONTAINER_NAME,
        IMAGE_PYTHON,
        "-c",
        script,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_drifted_host_is_named_by_preflight_and_train_refuses(
    cluster: tuple[ClusterSpec, Inventory, Path],
) -> None:
    spec, _, stack = cluster

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GPUFLEET, *args], cwd=stack.parent, capture_output=True, text=True, timeout=600, check=False
        )

    clean = cli("preflight", "-f", str(stack))
    assert "environment: FAIL" not in clean.stdout + clean.stderr, clean.stdout[-3000:]
    drifted_host, other = spec.hosts[1].name, spec.hosts[0].name
    _drift(spec, drifted_host)
    try:
        checked = cli("preflight", "-f", str(stack))
        assert checked.returncode == 1, checked.stdout[-3000:]
        report = " ".join((checked.stdout + checked.stderr).split())
        assert f"{drifted_host} environment: FAIL: drifted from its image: python: +drifted 1.0" in report
        assert f"{other} environment" not in report
        refused = cli("train", "-f", str(stack), str(EXAMPLE), "--epochs", "1")
        assert refused.returncode == 1
        message = " ".join(refused.stderr.split())
        assert f"{drifted_host}: drifted from its image: python: +drifted 1.0" in message, refused.stderr
        assert f"{other}:" not in message
        assert "Traceback" not in refused.stderr
    finally:
        _drift(spec, drifted_host, remove=True)


def test_exec_prefixes_each_line_by_host_and_names_the_failures(
    cluster: tuple[ClusterSpec, Inventory, Path],
) -> None:
    spec, _, stack = cluster
    names = [host.name for host in spec.hosts]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GPUFLEET, "exec", "-f", str(stack), *args],
            cwd=stack.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    everywhere = cli("--", "hostname; echo second line")
    assert everywhere.returncode == 0, everywhere.stderr
    assert sorted(everywhere.stdout.splitlines()) == sorted(
        [f"{name} | {name}" for name in names] + [f"{name} | second line" for name in names]
    )
    failing = cli("--", f"test $(hostname) = {names[0]} || {{ echo no >&2; exit 3; }}")
    assert failing.returncode == 1
    assert f"{names[1]} | no" in failing.stderr
    assert (
        failing.stderr.strip().splitlines()[-1] == f"failed on 1 of {len(names)} hosts: {names[1]} (exit 3)"
    )
    only = cli("--hosts", names[1], "--", "echo", "hi")
    assert (only.returncode, only.stdout) == (0, f"{names[1]} | hi\n")


def test_image_delivery_streams_over_the_hosts_pinned_login_and_checks_the_id(
    cluster: tuple[ClusterSpec, Inventory, Path],
) -> None:
    """Pulumi's ImageDelivery script, run for real: the runner is this machine with the build daemon as
    its Docker, the host is a local host's own login (docker_ssh), pinned by KnownHostsCommand."""
    spec, _, stack = cluster
    state = state_dir(stack.parent, spec.name)
    host = spec.hosts[1]
    pins = dict(line.split(" ", 1) for line in (state / HOST_LOGIN_KNOWN_HOSTS).read_text().splitlines())
    user = spec.ssh.user  # the host's own login is the spec's user (in the host's private /etc/passwd)

    def pin(address: str) -> str:
        port = spec.ssh.host_port
        return pins[address if port == 22 else f"[{address}]:{port}"]

    target = SshTarget(user, host.address, spec.ssh.host_port, pin(host.address))
    reference = "gpufleet/delivery-test:1"
    with machine_lock(_quiet), build_daemon(_quiet) as builder:
        docker = builder.client()
        empty = subprocess.run(["tar", "-c", "-T", "/dev/null"], capture_output=True, check=True).stdout
        imported = subprocess.run(
            docker.argv("import", "-", reference), input=empty, capture_output=True, check=False
        )
        assert imported.returncode == 0, imported.stderr
        want = docker.run("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
        # The runner's `docker` is the build daemon, with its own (Debian's) CLI first on PATH.
        env = {**docker.environment(), "PATH": "/usr/bin:/bin", "DOCKER_HOST": docker.prefix[-1]}
        script = delivery_script(reference, target, str(state / KEY_FILE))
        ran = subprocess.run(
            ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert (ran.returncode, ran.stdout) == (0, want), ran.stderr
        wrong = SshTarget(target.user, target.host, target.port, pin(spec.hosts[0].address))
        refused = subprocess.run(
            ["bash", "-c", delivery_script(reference, wrong, str(state / KEY_FILE))],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "Host key verification failed" in refused.stderr
        docker.run("rmi", reference)
    paths = docker_hosts.daemon_paths(Path("/unused"), spec.name, host.name)
    there = subprocess.run(
        [dockerd.DOCKER_CLI, "--host", paths.host_url, "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert there.stdout.strip() == want


def _quiet(_: str) -> None:
    pass


def test_a_notebook_in_the_workspace_survives_down_and_up(
    cluster: tuple[ClusterSpec, Inventory, Path],
) -> None:
    """Last in the module: it takes the cluster down and up again (new host keys, same workspace)."""
    spec, _, stack = cluster
    folder = stack.parent
    inventory = load_inventory(state_dir(folder, spec.name))
    saved = _ssh(
        stack,
        spec,
        inventory.hosts[0],
        "echo '{\"cells\": []}' > /workspace/notes.ipynb && ls -ln /workspace",
    )
    assert saved.returncode == 0, saved.stderr
    cluster_down(spec, folder)
    cluster_up(spec, folder)
    inventory = load_inventory(state_dir(folder, spec.name))
    kept = _ssh(stack, spec, inventory.hosts[0], "cat /workspace/notes.ipynb; touch /workspace/notes.ipynb")
    assert (kept.returncode, kept.stdout) == (0, '{"cells": []}\n'), kept.stderr
    other = _ssh(stack, spec, inventory.hosts[1], "test ! -e /workspace/notes.ipynb")
    assert other.returncode == 0, "each host has a workspace of its own"
