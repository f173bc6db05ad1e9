"""Host facts: the JSON that ``gpufleet probe`` (gpufleet/probe.py) prints, as models.

Unknown keys are ignored (a newer probe may add some); a different
``facts_version`` is refused, because a key may have changed its meaning.
``None`` always means "absent on this host" (no /sys/class/infiniband, no
nvidia-smi, torch not installed), never "not probed".
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gpufleet.errors import GpufleetError, InputError
from gpufleet.probe import FACTS_VERSION

ROCE_V2 = "RoCE v2"


class FactsModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Address(FactsModel):
    family: Literal["inet", "inet6"]
    address: str
    prefixlen: int


class Interface(FactsModel):
    name: str
    operstate: str | None = None
    speed_mbps: int | None = None
    mtu: int | None = None
    mac: str | None = None
    virtual: bool | None = None
    addresses: list[Address] = []

    def has_address(self, address: str) -> bool:
        wanted = ipaddress.ip_address(address)
        return any(ipaddress.ip_address(a.address) == wanted for a in self.addresses)


class Gid(FactsModel):
    index: int
    gid: str
    type: str | None = None  # "IB/RoCE v1" | "RoCE v2"
    ndev: str | None = None

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The GID as an address: IPv4-mapped GIDs (::ffff:a.b.c.d) give the IPv4 address."""
        address = ipaddress.IPv6Address(self.gid)
        return address.ipv4_mapped or address

    @property
    def is_roce_v2(self) -> bool:
        return self.type == ROCE_V2

    @property
    def is_link_local(self) -> bool:
        return self.ip.is_link_local


class RdmaPort(FactsModel):
    port: int
    state: str | None = None  # ACTIVE, DOWN, INIT, ARMED
    phys_state: str | None = None  # LinkUp, Polling, Disabled
    link_layer: str | None = None  # InfiniBand | Ethernet
    rate: str | None = None
    rate_gbps: float | None = None
    gids: list[Gid] = []

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"

    def gid(self, index: int) -> Gid | None:
        return next((g for g in self.gids if g.index == index), None)


class RdmaDevice(FactsModel):
    name: str
    node_type: str | None = None
    hca_type: str | None = None
    fw_ver: str | None = None
    netdevs: list[str] = []
    ports: list[RdmaPort] = []


class Gpu(FactsModel):
    index: int | None = None
    name: str
    uuid: str | None = None
    memory_mib: int | None = None
    pci_bus_id: str | None = None
    driver_version: str | None = None


class Memlock(FactsModel):
    soft: int | Literal["unlimited"]
    hard: int | Literal["unlimited"]

    @property
    def unlimited(self) -> bool:
        return self.soft == "unlimited"


class TorchFacts(FactsModel):
    version: str | None = None
    cuda: str | None = None
    cuda_available: bool | None = None
    nccl_version: str | None = None
    nccl_source: str | None = None


class HcaPort(FactsModel):
    """One (device, port) pair, as NCCL_IB_HCA names it: ``mlx5_0:1``."""

    device: RdmaDevice
    port: RdmaPort

    @property
    def name(self) -> str:
        return f"{self.device.name}:{self.port.port}"


class HostFacts(FactsModel):
    facts_version: int
    source: Literal["live", "recorded"] = "live"
    hostname: str | None = None
    kernel: str | None = None
    python: str | None = None
    memlock: Memlock | None = None
    shm_bytes: int | None = None
    torch: TorchFacts | None = None
    interfaces: list[Interface] = []
    rdma: list[RdmaDevice] | None = None
    dev_infiniband: list[str] | None = None
    libibverbs: str | None = None
    ibverbs_providers: list[str] | None = None
    gpudirect_module: str | None = None
    gpus: list[Gpu] | None = None
    notes: list[str] = []

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def interface_with_address(self, address: str) -> Interface | None:
        return next((i for i in self.interfaces if i.has_address(address)), None)

    def hca_ports(self, link_layer: str | None = None, active_only: bool = True) -> list[HcaPort]:
        """Ports in device then port order, filtered by link layer (InfiniBand/Ethernet)."""
        return [
            HcaPort(device=device, port=port)
            for device in self.rdma or []
            for port in device.ports
            if (link_layer is None or port.link_layer == link_layer) and (port.active or not active_only)
        ]

    @property
    def nccl_version(self) -> tuple[int, ...] | None:
        text = self.torch.nccl_version if self.torch else None
        try:
            return tuple(int(part) for part in text.split(".")[:3]) if text else None
        except ValueError:
            return None


def parse_facts(data: object, source: str) -> HostFacts:
    """Validate probe output; raises GpufleetError naming the file and the first bad field."""
    if isinstance(data, dict) and data.get("facts_version") != FACTS_VERSION:
        raise GpufleetError(
            f"{source}: facts_version {data.get('facts_version')!r} is not {FACTS_VERSION}: "
            "re-run 'gpufleet probe' on that host with this gpufleet"
        )
    try:
        return HostFacts.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise GpufleetError(
            f"{source}: not gpufleet probe output ({where}: {first['msg']}); "
            "re-run 'gpufleet probe > FILE' on that host"
        ) from None


def load_facts(path: Path) -> HostFacts:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{path}: cannot read host facts: {error.strerror}") from None
    except (ValueError, RecursionError) as error:
        raise InputError(f"{path}: not JSON ({str(error)[:200]}); re-run 'gpufleet probe > FILE'") from None
    try:
        return parse_facts(data, str(path))
    except GpufleetError as error:
        raise InputError(str(error)) from None


def load_facts_dir(folder: Path, host_names: Iterable[str]) -> dict[str, HostFacts]:
    """``folder/<host>.json`` for every host; a missing file is an error naming the host."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected <host>.json files from 'gpufleet probe')")
    names = list(host_names)
    missing = [name for name in names if not (folder / f"{name}.json").is_file()]
    if missing:
        raise InputError(
            f"{folder}: no facts for host(s) {', '.join(missing)}: run 'gpufleet probe > "
            f"{folder}/<host>.json' on each (or the launcher's probe)"
        )
    return {name: load_facts(folder / f"{name}.json") for name in names}
