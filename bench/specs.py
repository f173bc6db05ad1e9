"""Generated cluster specs shared by the benchmarks: racks of 200 hosts per /24,
8 GPUs and 8 InfiniBand HCAs per host, 2 NAS shares, Jupyter on."""

from __future__ import annotations

from typing import Any

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V bench"


def generated_spec(hosts: int) -> dict[str, Any]:
    return {
        "name": f"bench-{hosts}",
        "image": {"name": "registry.example.com/ml/train", "digest": "sha256:" + "b" * 64},
        "ssh": {"authorized_keys": [KEY], "admin_cidrs": ["10.20.0.0/24"]},
        "network": {"cluster_cidr": "10.128.0.0/12", "fabric": "infiniband"},
        "nas": [
            {"name": "data", "server": "10.128.0.2", "export": "/data", "mount": "/data", "read_only": True},
            {"name": "ckpt", "server": "10.128.0.2", "export": "/ckpt", "mount": "/checkpoints"},
        ],
        "jupyter": {"enabled": True},
        "hosts": [
            {
                "name": f"gpu-{i:04d}",
                "address": f"10.128.{i // 200}.{i % 200 + 10}",
                "gpus": 8,
                "ifname": "ens10f0",
                "hcas": [f"mlx5_{n}" for n in range(8)],
            }
            for i in range(hosts)
        ],
    }
