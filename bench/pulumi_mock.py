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
from specs import generated_spec  # bench/specs.py (bench/ is on sys.path when run as a script)

from components.testing import fake_ed25519, run_program, start_mocks


def pulumi_spec(hosts: int) -> dict[str, Any]:
    """The shared generated spec, plus what the Pulumi program needs: docker_ssh and host_key."""
    spec = generated_spec(hosts)
    for i, host in enumerate(spec["hosts"]):
        host["docker_ssh"] = f"ops@10.20.{i // 200}.{i % 200 + 10}"
        host["host_key"] = fake_ed25519(f"bench-host-{i}")[0]
    return spec


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
        spec = pulumi_spec(hosts)
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
