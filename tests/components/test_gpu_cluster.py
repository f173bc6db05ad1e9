"""Component conventions, checked on the whole program's registrations (mocks)."""

from __future__ import annotations

import pytest

from components.testing import ProgramRun, run_program
from gpufleet.spec.loader import read_stack_config
from tests.conftest import STACKS_DIR

COMPONENT_TYPES = {
    "gpufleet:components:GpuCluster",
    "gpufleet:components:ClusterKeys",
    "gpufleet:components:TrainingImage",
    "gpufleet:components:GpuHost",
    "gpufleet:components:HostFirewall",
    "gpufleet:components:NasVolume",
}


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(read_stack_config(STACKS_DIR / "Pulumi.example-ib.yaml"), stack="conventions")


def _name_of(urn: str) -> str:
    return urn.rsplit("::", 1)[1]


def test_components_use_gpufleet_type_tokens(run: ProgramRun) -> None:
    components = {r.typ for r in run.resources if not r.custom}
    assert components == COMPONENT_TYPES


def test_every_child_is_named_after_its_parent(run: ProgramRun) -> None:
    for resource in run.resources:
        parent = run.parents[resource.name]
        if resource.typ == "gpufleet:components:GpuCluster":
            assert parent.endswith("pulumi:pulumi:Stack::gpufleet-conventions"), parent
            continue
        assert resource.name.startswith(_name_of(parent) + "-"), (resource.name, parent)


def test_one_cluster_component_holds_everything(run: ProgramRun) -> None:
    [cluster] = [r for r in run.resources if r.typ == "gpufleet:components:GpuCluster"]
    assert cluster.name == "chatbot-ib"
    hosts = [r.name for r in run.resources if r.typ == "gpufleet:components:GpuHost"]
    assert sorted(hosts) == [f"chatbot-ib-gpu-{i}" for i in range(4)]
    assert all(_name_of(run.parents[h]) == "chatbot-ib" for h in hosts)


def test_cluster_keys_make_one_controller_key_and_one_host_key_per_node(run: ProgramRun) -> None:
    keys = sorted(r.name for r in run.of_type("tls:index/privateKey:PrivateKey"))
    assert keys == ["chatbot-ib-keys-controller"] + [f"chatbot-ib-keys-host-gpu-{i}" for i in range(4)]
    assert {r.inputs["algorithm"] for r in run.of_type("tls:index/privateKey:PrivateKey")} == {"ED25519"}


def test_exported_host_keys_are_the_generated_ones_and_distinct(run: ProgramRun) -> None:
    keys = [h["host_key"] for h in run.exports["inventory"]]
    assert len(set(keys)) == len(keys) == 4
    assert all(k.startswith("ssh-ed25519 ") and len(k.split()) == 2 for k in keys)
    assert "controller_private_key" in run.secret_exports
    assert "controller_public_key" not in run.secret_exports
