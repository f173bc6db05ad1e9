"""The backend-neutral container settings: what NCCL needs, RDMA only on RDMA fabrics."""

from __future__ import annotations

import pytest

from gpufleet.derive.container import GIB, container_settings
from gpufleet.derive.nccl import nccl_env
from gpufleet.derive.slots import host_slots
from gpufleet.spec import parse_spec
from tests.spec.test_models import mutated, valid_spec


def settings_for(data: dict[str, object], host: int = 0):  # type: ignore[no-untyped-def]
    spec = parse_spec(data)
    return container_settings(spec, spec.hosts[host], nccl_env(spec, spec.hosts[host]))


@pytest.mark.parametrize(("fabric", "rdma"), [("infiniband", True), ("roce", True), ("ethernet", False)])
def test_rdma_devices_only_on_rdma_fabrics(fabric: str, rdma: bool) -> None:
    settings = settings_for(mutated("network.fabric", fabric))
    assert ("/dev/infiniband" in settings.devices) is rdma
    assert ("IPC_LOCK" in settings.cap_add) is rdma


def test_defaults_are_what_nccl_needs() -> None:
    settings = settings_for(valid_spec())
    assert settings.network_mode == "host"
    assert settings.memlock_unlimited
    assert settings.shm_size_bytes == 16 * GIB
    assert settings.gpus == 8
    assert settings.restart == "unless-stopped"


def test_cpu_host_reserves_no_gpus() -> None:
    assert settings_for(mutated("hosts.1.gpus", 0), host=1).gpus == 0


def test_ipc_host_replaces_shm_size() -> None:
    settings = settings_for(mutated("container", {"ipc_host": True}))
    assert settings.ipc_mode == "host" and settings.shm_size_bytes is None


def test_nfs_volume_options() -> None:
    data = valid_spec()
    data["nas"][0]["read_only"] = True
    volumes = {v.mount: v for v in settings_for(data).volumes}
    assert volumes["/data"].driver_opts == {
        "type": "nfs",
        "o": "addr=10.10.0.250,nfsvers=4.1,hard,noatime,ro",
        "device": ":/export/data",
    }
    assert volumes["/data"].read_only and not volumes["/checkpoints"].read_only


@pytest.mark.parametrize(
    ("nproc", "gpus", "slots"), [("auto", 8, 8), ("auto", 0, 1), (2, 0, 2), (4, 8, 4)], ids=str
)
def test_slots(nproc: object, gpus: int, slots: int) -> None:
    data = mutated("hosts.0.gpus", gpus)
    data["training"] = {"nproc_per_node": nproc}
    spec = parse_spec(data)
    assert host_slots(spec, spec.hosts[0]) == slots


def test_fabric_resolved_from_facts_decides_rdma_devices() -> None:
    from dataclasses import replace

    spec = parse_spec(mutated("network.fabric", "auto"))
    host = spec.hosts[0]
    spec_only = nccl_env(spec, host)
    assert "/dev/infiniband" not in container_settings(spec, host, spec_only).devices
    resolved = replace(spec_only, fabric="infiniband")
    settings = container_settings(spec, host, resolved)
    assert settings.devices == ("/dev/infiniband",) and settings.cap_add == ("IPC_LOCK",)
