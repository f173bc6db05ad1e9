"""The Pulumi program under mocks for 16, 64 and 256 hosts, beside bare registrations.

For each size, in one run: the real ``__main__.py`` (spec validation, derivations,
rendering, every component and resource) and two baselines with the same mocks
and the same number of registrations: bare resources (no inputs, no output
properties) and the same SDK classes the program registers, flat, with minimal
inputs. The second isolates what is ours (derivations, rendering, inputs,
nesting) from the SDK's per-class cost. Medians of several runs, interleaved so
that machine noise hits all alike. Goal (issue 3): the program costs at most
1.3x the bare registrations at 256 hosts.

    .venv/bin/python bench/pulumi_mock.py [--repeat 5] [--sizes 16,64,256]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # components/ lives at the repo root

import pulumi
import pulumi_docker as docker
import pulumi_tls as tls
from pulumi_command import remote

from components.testing import fake_ed25519, run_program, start_mocks

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICz5ewroQEj/vw7OrTFRV8xC+4Ut/lU8JEiutJcRUi6V bench"


def generated_spec(hosts: int) -> dict[str, Any]:
    """8 GPUs and 8 HCAs per host, InfiniBand, 2 NAS shares, Jupyter on."""
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
                "docker_ssh": f"ops@10.20.{i // 200}.{i % 200 + 10}",
                "host_key": fake_ed25519(f"bench-host-{i}")[0],
                "gpus": 8,
                "ifname": "ens10f0",
                "hcas": [f"mlx5_{n}" for n in range(8)],
            }
            for i in range(hosts)
        ],
    }


class Bare(pulumi.CustomResource):
    def __init__(self, name: str) -> None:
        super().__init__("gpufleet:bench:Bare", name, {})


class Component(pulumi.ComponentResource):
    def __init__(self, typ: str, name: str) -> None:
        super().__init__(typ, name, None)
        self.register_outputs({})


# The SDK classes the program registers, each with minimal inputs.
SAME_TYPES: dict[str, Callable[[str], pulumi.Resource]] = {
    "tls:index/privateKey:PrivateKey": lambda n: tls.PrivateKey(n, algorithm="ED25519"),
    "pulumi:providers:docker": lambda n: docker.Provider(n),
    "command:remote:Command": lambda n: remote.Command(n, connection=remote.ConnectionArgs(host="h")),
    "docker:index/remoteImage:RemoteImage": lambda n: docker.RemoteImage(n, name="x"),
    "docker:index/volume:Volume": lambda n: docker.Volume(n),
    "docker:index/container:Container": lambda n: docker.Container(n, image="x"),
}


def program_seconds(spec: dict[str, Any]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    run = run_program(spec, stack="bench")
    return time.perf_counter() - start, [r.typ if r.custom else f"component:{r.typ}" for r in run.resources]


def registrations_seconds(make: Callable[[int], pulumi.Resource], count: int) -> float:
    """The same mocks, ``count`` resources made by ``make``, all awaited."""
    start = time.perf_counter()
    mocks = start_mocks("bench", {}, [])

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def body() -> pulumi.Output[Any]:
        return pulumi.Output.all(*(make(i).urn for i in range(count)))

    body()
    assert len(mocks.resources) == count
    return time.perf_counter() - start


def same_types(types: list[str]) -> Callable[[int], pulumi.Resource]:
    def make(i: int) -> pulumi.Resource:
        typ = types[i]
        if typ.startswith("component:"):
            return Component(typ.removeprefix("component:"), f"r-{i}")
        return SAME_TYPES[typ](f"r-{i}")

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="16,64,256")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore", DeprecationWarning)

    print("| hosts | resources | program s | bare s | same types s | program / bare | program / same types |")
    print("|------:|----------:|----------:|-------:|-------------:|---------------:|---------------------:|")
    for hosts in (int(s) for s in args.sizes.split(",")):
        spec = generated_spec(hosts)
        _, types = program_seconds(spec)  # warm-up; also what it registers
        count = len(types)
        program, bare, typed = [], [], []
        for _ in range(args.repeat):
            program.append(program_seconds(spec)[0])
            bare.append(registrations_seconds(lambda i: Bare(f"bare-{i}"), count))
            typed.append(registrations_seconds(same_types(types), count))
        p, b, t = (statistics.median(x) for x in (program, bare, typed))
        print(
            f"| {hosts} | {count} | {p:.2f} | {b:.2f} | {t:.2f} | {p / b:.2f}x | {p / t:.2f}x |", flush=True
        )


if __name__ == "__main__":
    main()
