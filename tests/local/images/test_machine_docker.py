"""lock and build for a stack that is not local, with "this machine's Docker" (root, slow).

The machine's Docker here is a private dockerd reached through DOCKER_HOST, as
a Pulumi runner's would be; no registry is reachable, so the base is the
stand-in, loaded into it first (a site without a registry does the same).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.environment.docker_client import machine_docker as docker_here
from gpufleet.errors import GpufleetError
from gpufleet.local import dockerd, images
from gpufleet.local.images import machine_docker
from gpufleet.local.images.builder import build_daemon
from gpufleet.local.images.cache import machine_lock
from gpufleet.local.images.stand_in import machine_recipe
from gpufleet.render.image_context import MANIFEST_LABEL
from gpufleet.spec.models import ClusterSpec
from tests.conftest import stack_spec
from tests.local.images.conftest import quiet, real

NAME = "registry.example.com/ml/machine-test:v1"


@pytest.fixture
def machine(built: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Docker daemon with the stand-in base loaded, as DOCKER_HOST; the base's name."""
    base = machine_recipe().stable_name
    with machine_lock(quiet), build_daemon(quiet) as builder:
        base_id = builder.image_id(base)
    assert base_id is not None
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-machine-"))
    paths = dockerd.DaemonPaths(data_root=folder / "data", run_dir=folder / "run")
    daemon = dockerd.start(paths)
    try:
        dockerd.wait_ready(daemon, "the machine's docker")
        images.load_into(images.LocalImage(base, base_id), daemon, "machine", quiet)
        monkeypatch.setenv("DOCKER_HOST", paths.host_url)
        yield base
    finally:
        dockerd.stop(daemon.pid, paths)
        dockerd.unmount_below(folder)
        shutil.rmtree(folder, ignore_errors=True)


def production_spec(base: str) -> ClusterSpec:
    spec = stack_spec("example-ethernet")
    image = spec.image.model_validate({"name": NAME, "base": base})
    return spec.model_copy(update={"image": image})


@pytest.mark.parametrize(
    ("reference", "digests", "expected"),
    [
        ("pytorch/pytorch:2.9.0", ["pytorch/pytorch@sha256:" + "a" * 64], "sha256:" + "a" * 64),
        ("docker.io/library/debian:12", ["debian@sha256:" + "b" * 64], "sha256:" + "b" * 64),
        ("registry.example.com/ml/base:1", ["mirror.example.com/ml/base@sha256:" + "c" * 64], None),
        ("gpufleet/cpu-base:x", [], None),
    ],
    ids=["docker-hub", "library", "another-registry", "never-pulled"],
)
def test_the_base_digest_is_its_own_repositorys(
    reference: str, digests: list[str], expected: str | None
) -> None:
    assert machine_docker.repo_digest(reference, digests) == expected


@real
def test_a_production_stack_locks_and_builds_with_the_machines_docker(machine: str) -> None:
    spec = production_spec(machine)
    progress: list[str] = []
    lock = machine_docker.lock_image(spec, None, False, progress.append, snapshot=False)
    assert lock.base.reference == machine and lock.base.digest is None
    assert lock.base.image_id is not None and lock.base.image_id.startswith("sha256:")
    assert any("not pulled; using the image loaded here" in line for line in progress)
    built = machine_docker.build(spec, lock, no_cache=False, push=False, progress=quiet)
    assert built.tag == NAME and built.digest is None
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", built.manifest_digest)
    labels = docker_here().run(
        "image", "inspect", "--format", '{{index .Config.Labels "' + MANIFEST_LABEL + '"}}', NAME
    )
    assert labels.stdout.strip() == built.manifest_digest
    with pytest.raises(
        GpufleetError, match=r"build: docker push registry\.example\.com/ml/machine-test:v1 failed"
    ):
        machine_docker.build(spec, lock, no_cache=False, push=True, progress=quiet)


@real
def test_a_base_neither_pullable_nor_loaded_says_where_to_lock(machine: str) -> None:
    spec = production_spec("registry.invalid/nobody/base:1")
    with pytest.raises(GpufleetError, match=r"cannot be pulled and is not loaded in this machine's Docker"):
        machine_docker.lock_image(spec, None, False, quiet, snapshot=False)
