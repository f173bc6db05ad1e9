"""A real local cluster for tests: ``with local_cluster(tmp_path, "name", 123) as (spec, inventory, stack):``.

Every test module picks its own cluster name and subnet octet (network
10.<octet>.0.0/24), so parallel runs never collide. The cluster is always torn
down, also when the test fails. The project root (where the state folder
lives) is ``tmp_path``; a throwaway "user" key is written to
``tmp_path/user_key`` and listed in ssh.authorized_keys.

Octets taken so far (grep for a free one before adding a module): 221-232,
234-238 (tests/local, tests/cli/test_cluster_commands.py), 240 (tests/local/test_containers.py),
242, 243 (tests/local/test_nas_kept.py), 244, 245 (bench/local_containers.py), 163-168
(tests/launcher/test_recovery.py), 181-184 (bench/recovery.py), 233
(bench/local_up.py), 161, 162 (tests/launcher), 172, 174, 178 (bench/fanout.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from gpufleet.inventory import Inventory
from gpufleet.local import cluster_down, cluster_up
from gpufleet.local.keys import generate_ed25519
from gpufleet.local.names import BRIDGE, lan_namespace
from gpufleet.spec import ClusterSpec, load_spec

USER_KEY_FILE = "user_key"


def cluster_config(
    name: str, subnet_octet: int, hosts: int, nproc: int, nas: bool, user_key: str, runtime: str = "process"
) -> Any:
    net = f"10.{subnet_octet}.0"
    config: dict[str, Any] = {
        "name": name,
        "provisioner": "local",
        "local": {"runtime": runtime},
        "image": {"name": "registry.example.com/ml/test-train:v1"},  # a tagged name, as teams write it
        "ssh": {"authorized_keys": [user_key], "admin_cidrs": [f"{net}.1/32"]},
        "network": {"cluster_cidr": f"{net}.0/24", "fabric": "ethernet"},
        "training": {"nproc_per_node": nproc},
        "hosts": [
            {"name": f"node-{i}", "address": f"{net}.{11 + i}", "gpus": 0, "ifname": "eth0"}
            for i in range(hosts)
        ],
    }
    if nas:
        config["nas"] = [
            {
                "name": "data",
                "server": f"{net}.250",
                "export": "/export/data",
                "mount": "/data",
                "read_only": True,
            },
            {
                "name": "checkpoints",
                "server": f"{net}.250",
                "export": "/export/ckpt",
                "mount": "/checkpoints",
            },
        ]
    return config


def write_stack(folder: Path, config: Any) -> Path:
    path = folder / f"Pulumi.{config['name']}.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": config}}, sort_keys=False))
    return path


@contextmanager
def local_cluster(
    tmp_path: Path,
    name: str,
    subnet_octet: int,
    hosts: int = 2,
    nproc: int = 2,
    nas: bool = True,
    runtime: str = "process",
    **extra: Any,
) -> Iterator[tuple[ClusterSpec, Inventory, Path]]:
    user = generate_ed25519()
    key_path = tmp_path / USER_KEY_FILE
    key_path.write_text(user.private_openssh)
    key_path.chmod(0o600)
    config = cluster_config(name, subnet_octet, hosts, nproc, nas, user.public_line("test-user"), runtime)
    stack = write_stack(tmp_path, {**config, **extra})
    spec = load_spec(stack)
    try:
        inventory = cluster_up(spec, tmp_path)
        yield spec, inventory, stack
    finally:
        cluster_down(spec, tmp_path)


@contextmanager
def lan_stranger(cluster: str, address: str, prefixlen: int, port: str) -> Iterator[str]:
    """A namespace on the cluster's LAN with ``address`` (inside cluster_cidr, not admin): an outsider.

    ``port`` names its veth's LAN end (at most 15 characters, unique on the machine).
    """
    name = f"gpufleet-{cluster}-stranger"
    lan = lan_namespace(cluster)
    batch = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port, "netns", lan],
        ["ip", "-n", lan, "link", "set", port, "master", BRIDGE],
        ["ip", "-n", lan, "link", "set", port, "up"],
        ["ip", "-n", name, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for argv in batch:
            subprocess.run(argv, check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
