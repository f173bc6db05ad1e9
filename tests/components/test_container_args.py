"""ContainerSettings -> pulumi-docker arguments (the pure mapping)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pulumi
import pytest

from components.container_args import container_args, device_requests, env_list, shm_size_mib
from gpufleet.derive.container import GIB, container_settings
from gpufleet.derive.nccl import nccl_env
from tests.conftest import stack_spec

CONTENTS = {"sshd_config": "a", "authorized_keys": "b", "ssh_host_ed25519_key": "c"}


def _settings(stack: str = "example-ib"):  # type: ignore[no-untyped-def]
    spec = stack_spec(stack)
    host = spec.hosts[0]
    return container_settings(spec, host, nccl_env(spec, host))


@pytest.mark.parametrize(
    ("shm_bytes", "expected"),
    [
        pytest.param(16 * GIB, 16384, id="16GiB"),
        pytest.param(None, None, id="ipc-host"),
        pytest.param(1, 1, id="tiny-rounds-up-to-1MiB"),
    ],
)
def test_shm_is_given_in_mib(shm_bytes: int | None, expected: int | None) -> None:
    assert shm_size_mib(replace(_settings(), shm_size_bytes=shm_bytes)) == expected


def test_gpus_are_requested_by_count_from_the_nvidia_driver() -> None:
    [request] = device_requests(replace(_settings(), gpus=3))
    assert (pulumi.get(request, "driver"), pulumi.get(request, "count")) == ("nvidia", 3)
    assert pulumi.get(request, "capabilities") == ["gpu"]


def test_cpu_host_requests_no_gpus() -> None:
    settings = replace(_settings(), gpus=0)
    assert device_requests(settings) == []
    assert "device_requests" not in container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )


def test_env_keeps_order_and_values() -> None:
    settings = replace(_settings(), env={"B": "2", "A": "x=y"})
    assert env_list(settings) == ["B=2", "A=x=y"]


def test_ethernet_has_no_rdma_arguments() -> None:
    settings = _settings("example-ethernet")
    args = container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    assert "devices" not in args and "capabilities" not in args
    assert args["network_mode"] == "host"


def test_ipc_host_drops_shm_and_sets_ipc_mode() -> None:
    settings = replace(_settings(), ipc_mode="host", shm_size_bytes=None)
    args = container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    assert args["ipc_mode"] == "host" and "shm_size" not in args


def test_every_config_file_needs_content() -> None:
    settings = _settings()
    with pytest.raises(ValueError, match="ssh_host_ed25519_key"):
        container_args(
            settings,
            image="img",
            config_contents={"sshd_config": "a", "authorized_keys": "b"},
            volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
            peers_host_dir="/etc/gpufleet/c/peers",
        )


def test_uploads_keep_the_file_modes() -> None:
    settings = _settings()
    args = container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    modes = {pulumi.get(u, "file"): pulumi.get(u, "permissions") for u in args["uploads"]}
    assert modes == {f.container_path: f"{f.mode:04o}" for f in settings.config_files}
    assert modes["/etc/gpufleet/mounted/ssh_host_ed25519_key"] == "0600"


def test_peers_come_from_a_host_folder_not_from_arguments() -> None:
    settings = _settings()
    args = container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    assert "hosts" not in args, "a host added would change every container's arguments"
    binds = [(pulumi.get(v, "host_path"), pulumi.get(v, "container_path")) for v in args["volumes"]]
    assert ("/etc/gpufleet/c/peers", "/etc/gpufleet/peers") in binds


@pytest.mark.parametrize(("limit", "expected"), [(-1, -1), (8 << 20, 8 << 20)], ids=["unlimited", "capped"])
def test_memlock_soft_and_hard(limit: int, expected: int) -> None:
    settings = replace(_settings(), memlock_bytes=limit)
    args = container_args(
        settings,
        image="img",
        config_contents=CONTENTS,
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    [ulimit] = args["ulimits"]
    assert (pulumi.get(ulimit, "soft"), pulumi.get(ulimit, "hard")) == (expected, expected)


def test_the_workspace_is_a_volume_of_its_own() -> None:
    spec = stack_spec("example-ib")
    settings = container_settings(spec, spec.hosts[0], nccl_env(spec, spec.hosts[0]))
    args = container_args(
        settings,
        image="sha256:x",
        config_contents=dict.fromkeys(("sshd_config", "authorized_keys", "ssh_host_ed25519_key"), ""),
        volume_names={v.name: v.name for v in (*settings.volumes, settings.workspace)},
        peers_host_dir="/etc/gpufleet/c/peers",
    )
    mounts = {v.container_path: (v.volume_name, v.read_only) for v in args["volumes"]}
    assert mounts["/workspace"] == ("chatbot-ib-workspace", False)


def test_the_peers_script_replaces_the_file_atomically(tmp_path: Any) -> None:
    import subprocess

    from components.remote_access import write_peers_script

    folder = tmp_path / "etc" / "peers"
    for content in ("10.0.0.1 a\n", "10.0.0.1 a\n10.0.0.2 b\n"):
        subprocess.run(
            ["sh", "-c", write_peers_script(str(folder), sudo=False)], input=content, text=True, check=True
        )
        assert (folder / "hosts").read_text() == content
    assert oct((folder / "hosts").stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in folder.iterdir()] == ["hosts"], "no temporary file left behind"
