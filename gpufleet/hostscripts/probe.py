#!/usr/bin/env python3
"""What one host has, as JSON: interfaces, RDMA ports and GIDs, GPUs, limits, versions.

Standard library only, one file: the launcher ships this source to hosts that do
not have gpufleet installed and runs it there with the host's own python
(``python3 probe.py`` or ``python3 -c "$(cat probe.py)"``). gpufleet parses the
output with ``gpufleet.facts``.

``--root DIR`` reads a recorded host instead of the live one (tests, benchmarks):
sysfs from ``DIR/sys``, addresses from ``DIR/ip-addr.json`` (``ip -j addr show``),
``DIR/proc/modules``, ``DIR/dev/infiniband``, ``DIR/nvidia-smi.csv`` (the output of
the query below) and the live-only values (limits, /dev/shm, versions) from
``DIR/runtime.json``. Whatever is missing is reported as absent (null), with a
note saying why; the probe never fails because a part of the host is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

FACTS_VERSION = 1  # bump when a key changes meaning; gpufleet refuses other versions

GPU_QUERY = "index,name,uuid,memory.total,pci.bus_id,driver_version"
GPU_FIELDS = ("index", "name", "uuid", "memory_mib", "pci_bus_id", "driver_version")
GPUDIRECT_MODULES = ("nvidia_peermem", "nv_peer_mem")
LIB_DIRS = (
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "usr/lib64",
    "usr/lib",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "lib64",
)
NCCL_WHEELS = ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")
ZERO_GID = "0000:0000:0000:0000:0000:0000:0000:0000"
TORCH_TIMEOUT_S = 60
_TORCH_QUERY = (
    "import json, torch\n"
    "out = {'version': torch.__version__, 'cuda': torch.version.cuda, 'cuda_available': False}\n"
    "if torch.cuda.is_available():\n"
    "    out['cuda_available'] = True\n"
    "    out['nccl_version'] = '.'.join(str(p) for p in torch.cuda.nccl.version())\n"
    "print(json.dumps(out))\n"
)


def _read(path: Path | str) -> str | None:
    """A sysfs/proc attribute, stripped; None when absent or unreadable (EINVAL on a down link)."""
    try:
        with open(path, "rb") as handle:  # binary + plain str paths: the GID table is ~1,000 reads
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def _natural(name: str) -> list[Any]:
    # mlx5_2 before mlx5_10, as ibv_devices lists them.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _state(text: str | None) -> str | None:
    """'4: ACTIVE' -> 'ACTIVE', '5: LinkUp' -> 'LinkUp' (the kernel's port attribute format)."""
    if text is None:
        return None
    return text.split(":", 1)[1].strip() if ":" in text else text


def _rate_gbps(text: str | None) -> float | None:
    """'400 Gb/sec (4X NDR)' -> 400.0."""
    match = re.match(r"^\s*([\d.]+)\s*Gb/sec", text or "")
    return float(match.group(1)) if match else None


# --- RDMA -----------------------------------------------------------------------------


def _gids(port_dir: Path) -> list[dict[str, Any]]:
    gids = []
    table = os.path.join(port_dir, "gids")
    attrs = os.path.join(port_dir, "gid_attrs")
    try:
        names = os.listdir(table)
    except OSError:
        return []
    for name in sorted(names, key=lambda n: int(n) if n.isdigit() else -1):
        gid = _read(os.path.join(table, name))
        if not gid or gid == ZERO_GID or not name.isdigit():
            continue  # unused slot: its type/ndev attributes read as EINVAL
        gids.append(
            {
                "index": int(name),
                "gid": gid,
                "type": _read(os.path.join(attrs, "types", name)),
                "ndev": _read(os.path.join(attrs, "ndevs", name)),
            }
        )
    return gids


def _port(port_dir: Path, number: int) -> dict[str, Any]:
    rate = _read(port_dir / "rate")
    return {
        "port": number,
        "state": _state(_read(port_dir / "state")),
        "phys_state": _state(_read(port_dir / "phys_state")),
        "link_layer": _read(port_dir / "link_layer"),
        "rate": rate,
        "rate_gbps": _rate_gbps(rate),
        "gids": _gids(port_dir),
    }


def probe_rdma(sys_dir: Path) -> list[dict[str, Any]] | None:
    """Every device under class/infiniband with its ports; None when the class is absent."""
    class_dir = sys_dir / "class" / "infiniband"
    try:
        names = os.listdir(class_dir)
    except OSError:
        return None
    devices = []
    for name in sorted(names, key=_natural):
        dev = class_dir / name
        try:
            port_names = sorted(os.listdir(dev / "ports"), key=_natural)
        except OSError:
            port_names = []
        try:
            netdevs = sorted(os.listdir(dev / "device" / "net"), key=_natural)
        except OSError:
            netdevs = []
        devices.append(
            {
                "name": name,
                "node_type": _state(_read(dev / "node_type")),
                "hca_type": _read(dev / "hca_type"),
                "fw_ver": _read(dev / "fw_ver"),
                "netdevs": netdevs,
                "ports": [_port(dev / "ports" / p, int(p)) for p in port_names if p.isdigit()],
            }
        )
    return devices


# --- network interfaces ---------------------------------------------------------------


def _addresses_from_ip_json(document: Any) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for link in document if isinstance(document, list) else []:
        if not isinstance(link, dict) or "ifname" not in link:
            continue
        by_name[str(link["ifname"])] = [
            {"family": a.get("family"), "address": a.get("local"), "prefixlen": a.get("prefixlen")}
            for a in link.get("addr_info", [])
            if isinstance(a, dict) and a.get("family") in ("inet", "inet6") and a.get("local")
        ]
    return by_name


def _live_addresses_without_ip(names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """IPv4 by ioctl, IPv6 from /proc: for container images that lack iproute2."""
    import fcntl  # Unix only; imported here so --root works anywhere

    siocgifaddr, siocgifnetmask = 0x8915, 0x891B
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                address = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), siocgifaddr, request)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), siocgifnetmask, request)[20:24])
            except OSError:
                continue
            prefix = bin(struct.unpack("!I", socket.inet_aton(mask))[0]).count("1")
            by_name[name].append({"family": "inet", "address": address, "prefixlen": prefix})
    for line in (_read(Path("/proc/net/if_inet6")) or "").splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[5] in by_name:
            packed = bytes.fromhex(fields[0])
            by_name[fields[5]].append(
                {
                    "family": "inet6",
                    "address": socket.inet_ntop(socket.AF_INET6, packed),
                    "prefixlen": int(fields[2], 16),
                }
            )
    return by_name


def _live_addresses(names: list[str], notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    try:
        result = subprocess.run(
            ["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
        )
        return _addresses_from_ip_json(json.loads(result.stdout))
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        notes.append(f"addresses: 'ip -j addr show' failed ({error}); read them by ioctl")
    try:
        return _live_addresses_without_ip(names)
    except (OSError, ImportError) as error:
        notes.append(f"addresses: unreadable ({error})")
        return {}


def probe_interfaces(sys_dir: Path, root: Path | None, notes: list[str]) -> list[dict[str, Any]]:
    class_dir = sys_dir / "class" / "net"
    try:
        names = os.listdir(class_dir)
    except OSError:
        names = []
        notes.append(f"interfaces: {class_dir} is unreadable")
    if root is None:
        addresses = _live_addresses(names, notes)
    else:
        recorded = root / "ip-addr.json"
        try:
            addresses = _addresses_from_ip_json(json.loads(recorded.read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            addresses = {}
            notes.append(f"addresses: {recorded} is unreadable ({error})")
    interfaces = []
    for name in sorted(set(names) | set(addresses), key=_natural):
        link = class_dir / name
        speed = _int(_read(link / "speed"))
        interfaces.append(
            {
                "name": name,
                "operstate": _read(link / "operstate"),
                "speed_mbps": speed if speed is not None and speed > 0 else None,
                "mtu": _int(_read(link / "mtu")),
                "mac": _read(link / "address"),
                # Physical NICs resolve to a bus device; lo, bridges, veth to devices/virtual.
                "virtual": "/devices/virtual/" in os.path.realpath(link) if name in names else None,
                "addresses": addresses.get(name, []),
            }
        )
    return interfaces


# --- what the container needs ---------------------------------------------------------


def probe_gpudirect(root: Path | None, notes: list[str]) -> str | None:
    modules = _read((root or Path("/")) / "proc" / "modules")
    if modules is None:
        notes.append("gpudirect: /proc/modules is unreadable; nvidia_peermem reported as not loaded")
        return None
    loaded = {line.split(" ", 1)[0] for line in modules.splitlines()}
    return next((name for name in GPUDIRECT_MODULES if name in loaded), None)


def probe_dev_infiniband(root: Path | None) -> list[str] | None:
    try:
        return sorted(os.listdir((root or Path("/")) / "dev" / "infiniband"), key=_natural)
    except OSError:
        return None


def probe_libibverbs(root: Path | None) -> tuple[str | None, list[str] | None]:
    """The libibverbs the loader would find, and its provider drivers (libmlx5-rdmav*.so ...)."""
    base = root or Path("/")
    library = None
    providers: list[str] | None = None
    for lib_dir in LIB_DIRS:
        for candidate in ("libibverbs.so.1", "libibverbs.so"):
            if library is None and (base / lib_dir / candidate).exists():
                library = "/" + lib_dir + "/" + candidate
        try:
            found = [f for f in os.listdir(base / lib_dir / "libibverbs") if "-rdmav" in f]
        except OSError:
            continue
        providers = sorted(set(providers or []) | set(found))
    if library is None and root is None:
        import ctypes.util

        library = ctypes.util.find_library("ibverbs")
    return library, providers


def probe_gpus(root: Path | None, notes: list[str]) -> list[dict[str, Any]] | None:
    if root is not None:
        output = _read(root / "nvidia-smi.csv")
        if output is None:
            notes.append("gpus: no recorded nvidia-smi.csv (nvidia-smi absent)")
            return None
    else:
        try:
            output = subprocess.run(
                ["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except FileNotFoundError:
            notes.append("gpus: nvidia-smi is absent")
            return None
        except (OSError, subprocess.SubprocessError) as error:
            notes.append(f"gpus: nvidia-smi failed ({error})")
            return None
    gpus = []
    for line in output.splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(GPU_FIELDS):
            continue
        gpu: dict[str, Any] = {field: values[i] for i, field in enumerate(GPU_FIELDS)}
        gpu["index"] = _int(gpu["index"])
        gpu["memory_mib"] = _int(gpu["memory_mib"])
        gpus.append(gpu)
    return gpus


def _wheel_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def probe_torch(import_torch: bool, notes: list[str]) -> dict[str, Any] | None:
    """torch and NCCL versions from the installed wheels' metadata; with ``import_torch``
    (GPU hosts), from torch itself, imported in a child python with a timeout."""
    version = _wheel_version("torch")
    if version is None:
        return None
    out: dict[str, Any] = {"version": version, "cuda": None, "cuda_available": None}
    out["nccl_version"], out["nccl_source"] = None, None
    for wheel in NCCL_WHEELS:
        nccl = _wheel_version(wheel)
        if nccl:
            out["nccl_version"], out["nccl_source"] = nccl, wheel
            break
    if not import_torch:
        return out
    try:
        result = subprocess.run(
            [sys.executable, "-c", _TORCH_QUERY],
            capture_output=True,
            text=True,
            timeout=TORCH_TIMEOUT_S,
            check=True,
        )
        live = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        notes.append(f"torch: importing torch failed ({error}); versions from wheel metadata")
        return out
    out.update({k: live.get(k) for k in ("version", "cuda", "cuda_available")})
    if live.get("nccl_version"):
        out["nccl_version"], out["nccl_source"] = live["nccl_version"], "torch.cuda.nccl.version()"
    return out


def _live_runtime(notes: list[str]) -> dict[str, Any]:
    import resource

    def limit(value: int) -> int | str:
        return "unlimited" if value == resource.RLIM_INFINITY else value

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        shm = os.statvfs("/dev/shm")
        shm_bytes: int | None = shm.f_blocks * shm.f_frsize
    except OSError:
        shm_bytes = None
        notes.append("shm: /dev/shm is absent")
    return {
        "hostname": socket.gethostname(),
        "kernel": os.uname().release,
        "python": ".".join(str(p) for p in sys.version_info[:3]),
        "memlock": {"soft": limit(soft), "hard": limit(hard)},
        "shm_bytes": shm_bytes,
    }


RUNTIME_KEYS = ("hostname", "kernel", "python", "memlock", "shm_bytes", "torch")


def probe(root: Path | None = None, import_torch: bool = True) -> dict[str, Any]:
    """Facts of the live host, or of the recorded host under ``root``.

    ``import_torch=False`` takes the torch and NCCL versions from the installed wheels
    only: importing torch costs ~3 s on a GPU host (measured on an H200 machine).
    """
    notes: list[str] = []
    sys_dir = (root / "sys") if root is not None else Path("/sys")
    if root is None:
        runtime = _live_runtime(notes)
    else:
        try:
            runtime = json.loads((root / "runtime.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            runtime = {}
            notes.append(f"runtime: {root / 'runtime.json'} is unreadable ({error})")
    gpus = probe_gpus(root, notes)
    library, providers = probe_libibverbs(root)
    facts: dict[str, Any] = {"facts_version": FACTS_VERSION, "source": "live" if root is None else "recorded"}
    facts.update({key: runtime.get(key) for key in RUNTIME_KEYS})
    if root is None:
        facts["torch"] = probe_torch(bool(gpus) and import_torch, notes)
    facts.update(
        {
            "interfaces": probe_interfaces(sys_dir, root, notes),
            "rdma": probe_rdma(sys_dir),
            "dev_infiniband": probe_dev_infiniband(root),
            "libibverbs": library,
            "ibverbs_providers": providers,
            "gpudirect_module": probe_gpudirect(root, notes),
            "gpus": gpus,
            "notes": notes,
        }
    )
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print this host's facts for gpufleet as JSON.")
    parser.add_argument("--root", type=Path, help="read a recorded host from DIR instead")
    parser.add_argument(
        "--no-import-torch",
        action="store_true",
        help="versions from the installed wheels only (skips the ~3 s torch import on GPU hosts)",
    )
    args = parser.parse_args(argv)
    if args.root is not None and not args.root.is_dir():
        print(f"probe: --root {args.root}: no such directory", file=sys.stderr)
        return 2
    json.dump(probe(args.root, not args.no_import_torch), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
