"""The training image: its content tag, its context from the lock, and real builds (root)."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import pytest

from gpufleet.environment.lockfile import LockedBase
from gpufleet.environment.packages import uses_stand_in_base
from gpufleet.errors import GpufleetError
from gpufleet.local import images
from gpufleet.local.images import training
from gpufleet.local.images.builder import build_daemon
from gpufleet.local.images.cache import machine_lock
from gpufleet.local.images.stand_in import machine_recipe
from gpufleet.render.image_context import MANIFEST_LABEL, MANIFEST_PATH
from gpufleet.spec.models import ClusterSpec
from tests.conftest import stack_spec
from tests.environment.sample_locks import sample_lock
from tests.local.images.conftest import quiet, real

BASE_ID = "sha256:" + "3" * 64


def _files(dockerfile: str, entrypoint: str = "#!/bin/sh\n") -> dict[str, bytes]:
    return {"Dockerfile": dockerfile.encode(), "entrypoint.sh": entrypoint.encode()}


def test_image_tag_is_the_image_name_and_a_content_tag() -> None:
    digest = training.image_inputs_digest(_files("FROM x\n"), "sha256:" + "1" * 64)
    tag = training.image_tag("registry.example.com/ml/chatbot-train:v2.9", digest)
    assert tag == f"registry.example.com/ml/chatbot-train:gpufleet-{digest[:12]}"
    assert training.image_inputs_digest(_files("FROM y\n"), "sha256:" + "1" * 64) != digest
    assert training.image_inputs_digest(_files("FROM x\n", "#!/bin/bash\n"), "sha256:" + "1" * 64) != digest
    assert training.image_inputs_digest(_files("FROM x\n"), "sha256:" + "2" * 64) != digest
    assert training.image_inputs_digest({**_files("FROM x\n"), "extra": b""}, "sha256:" + "1" * 64) != digest


def _local_lock(spec: ClusterSpec, reference: str = "gpufleet/cpu-base:py3.11-torch2.13.0_cpu-numpy2.4.6-r1"):  # type: ignore[no-untyped-def]
    lock = sample_lock(spec, snapshot=None)
    return lock.model_copy(update={"base": LockedBase(reference=reference, python="3.11.2", os="debian 12")})


def test_build_context_is_the_rendered_lock_from_the_locked_base() -> None:
    spec = stack_spec("local")
    context = training.build_context(spec, _local_lock(spec), BASE_ID)
    dockerfile = context.files[PurePosixPath("Dockerfile")]
    assert "\nFROM gpufleet/cpu-base:py3.11-torch2.13.0_cpu-numpy2.4.6-r1\n" in dockerfile
    assert PurePosixPath("gpufleet-env/requirements.lock") in context.files
    assert context.tag.startswith("registry.example.com/ml/chatbot-train:gpufleet-")
    other = spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"user": "someone"})})
    assert training.build_context(other, _local_lock(other), BASE_ID).tag != context.tag
    relocked = _local_lock(spec).model_copy(update={"python": ()})
    assert training.build_context(spec, relocked, BASE_ID).tag != context.tag


def test_stand_in_base_only_when_the_stack_leaves_image_base_unset() -> None:
    spec = stack_spec("local")
    assert uses_stand_in_base(spec)
    given = spec.model_copy(
        update={"image": spec.image.model_validate({**spec.image.model_dump(), "base": "x:1"})}
    )
    assert not uses_stand_in_base(given)


# pip 23-25's report of a hash mismatch, as a classic build and BuildKit log it.
PIP_HASH_ERROR = """\
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package \
versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have \
tampered with them.
    six==1.17.0 from https://files.pythonhosted.org/packages/b7/ce/six-1.17.0-py2.py3-none-any.whl#sha256=47:
        Expected sha256 0000000000000000000000000000000000000000000000000000000000000000
             Got        4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274
"""


@pytest.mark.parametrize(
    "log",
    [PIP_HASH_ERROR, "\n".join(f"#9 12.3 {line}" for line in PIP_HASH_ERROR.splitlines())],
    ids=["classic", "buildkit"],
)
def test_a_hash_mismatch_names_the_package(log: str) -> None:
    assert training.hash_mismatch(log) == "six==1.17.0"
    assert training.hash_mismatch("ERROR: No matching distribution found for six==9") is None


# --- real builds (root) -----------------------------------------------------------------------


@real
@pytest.mark.parametrize("buildkit", [False, True], ids=["classic", "buildkit"])
def test_the_rendered_context_builds_offline(
    built: tuple[images.LocalImage, list[images.BuildStep]], buildkit: bool
) -> None:
    """FROM the local stand-in base, no registry, with either builder: the lock installed, its manifest written."""
    spec = stack_spec("local")
    lock = images.cached_lock(spec, quiet)
    tag = f"gpufleet/builder-test:{'buildkit' if buildkit else 'classic'}"
    with machine_lock(quiet), build_daemon(quiet) as builder:
        base_id = builder.image_id(machine_recipe().stable_name)
        assert base_id is not None
        context = training.build_context(spec, lock, base_id)
        docker = builder.client()
        try:
            training.docker_build(docker, context, tag, quiet, buildkit=buildkit, log_name=f"test-{tag[-7:]}")
            probe = docker.run(
                "run", "--rm", "--network", "none", "--entrypoint", "/usr/local/bin/gpufleet-python", tag, "-c",
                "import json, torch, jupyterlab, os; print(json.dumps([torch.__version__, "
                "os.access('/usr/local/bin/gpufleet-entrypoint', os.X_OK), os.path.isfile('" + MANIFEST_PATH + "')]))",
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr
            version, entrypoint, manifest = json.loads(probe.stdout)
            assert f"torch=={version}" in lock.base_python, "the base's torch is not replaced"
            assert entrypoint and manifest
        finally:
            docker.run("rmi", "--force", tag)


@real
def test_ensure_image_twice_is_cached_and_labelled_with_its_manifest(
    built: tuple[images.LocalImage, list[images.BuildStep]],
) -> None:
    image, _ = built
    messages: list[str] = []
    again, steps = images.ensure_image(stack_spec("local"), messages.append)
    assert again == image
    assert [(s.name, s.cached) for s in steps] == [("base", True), ("image", True)]
    assert any(m.endswith(" cached") and "cpu-base" in m for m in messages)
    assert image.tag.startswith("registry.example.com/ml/chatbot-train:gpufleet-")  # the :v2.9 tag replaced
    assert image.id.startswith("sha256:")
    assert image.manifest_digest is not None and len(image.manifest_digest) == 71
    with machine_lock(quiet), build_daemon(quiet) as builder:
        docker = builder.client()
        assert training.manifest_digest(docker, image.id) == image.manifest_digest
        labels = docker.run("image", "inspect", "--format", "{{json .Config.Labels}}", image.id)
        assert json.loads(labels.stdout)[MANIFEST_LABEL] == image.manifest_digest


@real
def test_a_changed_input_makes_a_new_tag(built: tuple[images.LocalImage, list[images.BuildStep]]) -> None:
    image, _ = built
    spec = stack_spec("local")
    other = spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"user": "imagetest"})})
    changed, steps = images.ensure_image(other, quiet)
    assert changed.tag != image.tag
    assert changed.id != image.id
    assert steps[0].cached  # same base


@real
def test_a_lock_for_another_base_is_refused_before_building() -> None:
    spec = stack_spec("local")
    lock = _local_lock(spec, reference="gpufleet/cpu-base:py3.11-torch0.1-numpy1-r1")
    with pytest.raises(GpufleetError, match=r"the lock does not fit the base .*: run `gpufleet lock`"):
        images.ensure_image(spec, quiet, lock=lock)


@real
def test_a_base_that_cannot_be_pulled_is_a_clear_error() -> None:
    spec = stack_spec("local")
    base = "registry.invalid/nobody/no-such-base:1"
    given = spec.model_copy(
        update={"image": spec.image.model_validate({**spec.image.model_dump(), "base": base})}
    )
    with pytest.raises(GpufleetError) as caught:
        images.ensure_image(given, quiet, lock=_local_lock(given, reference=base))
    message = str(caught.value)
    assert "\n" not in message
    assert f"image.base {base!r}" in message
    assert "leave image.base unset" in message
    assert "load -i" in message
