"""Run the Pulumi program under Pulumi's unit-test mocks (no engine, no CLI needed).

Used by the tests and by bench/pulumi_mock.py. The mocks invent what real
providers compute (key material, image ids) and return it NOT marked secret,
so a secrecy test proves that the program itself wraps secrets.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pulumi.runtime.mocks import MockMonitor

PROJECT = "gpufleet"
PROGRAM = Path(__file__).resolve().parents[1] / "__main__.py"
# Pulumi's wire marker of a secret value (a constant of the protocol, not a credential).
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105


@cache
def fake_ed25519(seed: str) -> tuple[str, str]:
    """A real ed25519 key pair, deterministic per seed: (public line, OpenSSH private key)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    return public.decode(), private.decode()


RUNNER_PRIVATE_KEY = fake_ed25519("runner")[1]


class GpufleetMocks(pulumi.runtime.Mocks):
    """Echo inputs as state; invent computed outputs; record every registration."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.dependencies: dict[str, list[str]] = {}
        """Per resource name, the URNs it depends on (parents' depends_on included)."""
        self.parents: dict[str, str] = {}
        """Per resource name, its parent's URN."""
        self.retained: set[str] = set()
        """The resources registered with retain_on_delete (pulumi destroy leaves them)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            public, private = fake_ed25519(args.name)
            state.update(publicKeyOpenssh=public + "\n", privateKeyOpenssh=private)
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = "sha256:" + hashlib.sha256(str(args.inputs.get("name")).encode()).hexdigest()
            state["repoDigest"] = args.inputs.get("name")
        elif args.typ == "docker:index/image:Image":
            repository = str(args.inputs.get("imageName")).rsplit(":", 1)[0]
            digest = hashlib.sha256(json.dumps(args.inputs, sort_keys=True, default=str).encode()).hexdigest()
            state["repoDigest"] = f"{repository}@sha256:{digest}"
        elif args.typ == "command:local:Command":  # ImageDelivery prints the id the host loaded
            state["stdout"] = "sha256:" + hashlib.sha256(str(args.inputs.get("create")).encode()).hexdigest()
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


class _RecordingMonitor(MockMonitor):
    """The stock mock monitor, plus a record of each registration's dependencies."""

    def __init__(self, mocks: GpufleetMocks) -> None:
        super().__init__(mocks)
        self.recorder = mocks

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        self.recorder.dependencies[request.name] = list(request.dependencies)
        self.recorder.parents[request.name] = request.parent
        if request.retainOnDelete:
            self.recorder.retained.add(request.name)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]


@dataclass
class ProgramRun:
    """What one run of the program registered and exported."""

    resources: list[pulumi.runtime.MockResourceArgs]
    dependencies: dict[str, list[str]] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    retained: set[str] = field(default_factory=set)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: set[str] = field(default_factory=set)

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> pulumi.runtime.MockResourceArgs:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]


def start_mocks(stack: str, config: Mapping[str, str], secret_keys: list[str]) -> GpufleetMocks:
    """Fresh process-global Pulumi state: root stack, mocks and config."""
    pulumi.runtime.settings.ROOT.set(None)
    mocks = GpufleetMocks()
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=stack, preview=False, monitor=_RecordingMonitor(mocks)
    )
    pulumi.runtime.set_all_config(dict(config), secret_keys)
    return mocks


def run_program(
    cluster: Any,
    *,
    stack: str = "test",
    runner_private_key: str | None = RUNNER_PRIVATE_KEY,
    extra_config: Mapping[str, str] | None = None,
    program: Path = PROGRAM,
) -> ProgramRun:
    """Run ``__main__.py`` with ``gpufleet:cluster`` = ``cluster`` and wait for every output."""
    config = {f"{PROJECT}:cluster": json.dumps(cluster), **(extra_config or {})}
    secret_keys = []
    if runner_private_key is not None:
        config[f"{PROJECT}:runner_private_key"] = runner_private_key
        secret_keys.append(f"{PROJECT}:runner_private_key")
    mocks = start_mocks(stack, config, secret_keys)
    exported: dict[str, Any] = {}
    outputs: dict[str, pulumi.Output[Any]] = {}

    def record(name: str, value: Any = None) -> None:
        exported[name] = value

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def body() -> pulumi.Output[Any]:
        with mock.patch.object(pulumi, "export", record):
            runpy.run_path(str(program), run_name="__main__")
        outputs.update({name: pulumi.Output.from_input(value) for name, value in exported.items()})
        return pulumi.Output.all(*outputs.values())

    body()
    run = ProgramRun(
        resources=mocks.resources,
        dependencies=mocks.dependencies,
        parents=mocks.parents,
        retained=mocks.retained,
    )
    for name, output in outputs.items():
        # Every future is done once the test body has returned.
        data = output._data.result()
        run.exports[name] = data.value
        if data.is_secret:
            run.secret_exports.add(name)
    return run
