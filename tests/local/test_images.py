"""The local runtime's images: pure helpers, then real builds (root: debootstrap, dockerd).

The real tests use the machine's image cache (GPUFLEET_CACHE or /var/cache/gpufleet),
shared with later tests and runs: the CPU base is built once per machine or CI run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.local import dockerd, images
from gpufleet.spec.models import ClusterSpec
from tests.conftest import needs_root, stack_spec

# --- pure -------------------------------------------------------------------------------------

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_takes_the_suite_itself_not_security() -> None:
    assert images.mirror_from_deb822(DEB822) == "http://mirror.example/debian"
    security_first = DEB822.split("\n\n")[1] + "\n\n" + DEB822.split("\n\n")[0]
    assert images.mirror_from_deb822(security_first) == "http://mirror.example/debian"


def test_mirror_from_deb822_skips_disabled_and_source_stanzas() -> None:
    text = (
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n"
    )
    assert images.mirror_from_deb822(text) == "http://on.example/debian"


def test_mirror_from_deb822_ignores_an_inline_key() -> None:
    text = (
        "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nSigned-By:\n"
        " -----BEGIN PGP PUBLIC KEY BLOCK-----\n URIs: http://not-this\n .\n"
    )
    assert images.mirror_from_deb822(text) == "http://a.example/debian"


def test_mirror_from_sources_list() -> None:
    text = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://one.example/debian/ bookworm main\n"
    )
    assert images.mirror_from_sources_list(text) == "http://one.example/debian"


def test_apt_mirror_prefers_deb822_then_sources_list_then_deb_debian_org() -> None:
    one_line = "deb http://one.example/debian bookworm main\n"
    assert images.apt_mirror(DEB822, one_line) == "http://mirror.example/debian"
    assert images.apt_mirror(None, one_line) == "http://one.example/debian"
    assert images.apt_mirror("Types: deb\nURIs: http://x\nSuites: trixie\n", None) == images.FALLBACK_MIRROR
    assert images.apt_mirror(None, None) == "http://deb.debian.org/debian"


def recipe(**changes: object) -> images.BaseRecipe:
    values: dict[str, object] = {
        "mirror": "http://mirror.example/debian",
        "torch": "2.13.0+cpu",
        "numpy": "2.4.6",
        "ca_certificates": (("proxy.crt", b"-----BEGIN CERTIFICATE-----\n"),),
        "apt_files": (("sources.list.d/debian.sources", DEB822.encode()),),
    }
    values.update(changes)
    return images.BaseRecipe(**values)  # type: ignore[arg-type]


def test_recipe_hash_is_stable_and_names_the_base() -> None:
    assert recipe().digest == recipe().digest
    assert len(recipe().digest) == 64
    assert recipe().tag == f"gpufleet/cpu-base:{recipe().digest[:12]}"


@pytest.mark.parametrize(
    "change",
    [
        {"mirror": "http://other.example/debian"},
        {"torch": "2.14.0+cpu"},
        {"numpy": "2.4.5"},
        {"ca_certificates": (("proxy.crt", b"another certificate"),)},
        {"ca_certificates": ()},
        {"apt_files": ()},
        {"suite": "trixie"},
        {"packages": ("ca-certificates", "python3")},
        {"version": images.RECIPE_VERSION + 1},
    ],
)
def test_every_recipe_input_changes_the_hash(change: dict[str, object]) -> None:
    assert recipe(**change).digest != recipe().digest


def test_recipe_hash_ignores_the_order_of_certificates() -> None:
    two = ((("a.crt", b"A"), ("b.crt", b"B")), (("b.crt", b"B"), ("a.crt", b"A")))
    assert recipe(ca_certificates=two[0]).digest == recipe(ca_certificates=two[1]).digest


def test_image_tag_is_the_image_name_and_a_content_tag() -> None:
    digest = images.image_inputs_digest(b"FROM x\n", b"#!/bin/sh\n", "sha256:" + "1" * 64)
    tag = images.image_tag("registry.example.com/ml/chatbot-train", digest)
    assert tag == f"registry.example.com/ml/chatbot-train:gpufleet-{digest[:12]}"
    assert images.image_inputs_digest(b"FROM y\n", b"#!/bin/sh\n", "sha256:" + "1" * 64) != digest
    assert images.image_inputs_digest(b"FROM x\n", b"#!/bin/bash\n", "sha256:" + "1" * 64) != digest
    assert images.image_inputs_digest(b"FROM x\n", b"#!/bin/sh\n", "sha256:" + "2" * 64) != digest


def test_build_context_renders_from_the_effective_base() -> None:
    spec = stack_spec("local")
    context = images.build_context(spec, "gpufleet/cpu-base:0123456789ab", "sha256:" + "3" * 64)
    assert b"\nFROM gpufleet/cpu-base:0123456789ab\n" in context.dockerfile
    assert context.tag.startswith("registry.example.com/ml/chatbot-train:gpufleet-")
    other = spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"user": "someone"})})
    assert (
        images.build_context(other, "gpufleet/cpu-base:0123456789ab", "sha256:" + "3" * 64).tag != context.tag
    )


def test_stand_in_base_only_when_the_stack_leaves_image_base_unset() -> None:
    spec = stack_spec("local")
    assert images.uses_stand_in_base(spec)
    given = spec.model_copy(
        update={"image": spec.image.model_validate({**spec.image.model_dump(), "base": "x:1"})}
    )
    assert not images.uses_stand_in_base(given)


@pytest.mark.parametrize(
    ("ref", "stored"),
    [
        ("gpufleet/cpu-base:abc", "docker.io/gpufleet/cpu-base:abc"),
        ("debian", "docker.io/library/debian:latest"),
        (
            "pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime",
            "docker.io/pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime",
        ),
        ("registry.example.com/ml/train:gpufleet-1", "registry.example.com/ml/train:gpufleet-1"),
        ("localhost:5000/train", "localhost:5000/train:latest"),
        ("localhost/train:1", "localhost/train:1"),
    ],
)
def test_normalized_reference(ref: str, stored: str) -> None:
    assert images.normalized_reference(ref) == stored
    familiar = stored.removeprefix("docker.io/").removeprefix("library/")
    assert images.familiar_reference(ref) == familiar


def test_stored_image_id_reads_a_stopped_daemons_files(tmp_path: Path) -> None:
    store = tmp_path / "image" / "overlay2"
    content = store / "imagedb" / "content" / "sha256"
    content.mkdir(parents=True)
    image_id = "sha256:" + "a" * 64
    (content / ("a" * 64)).write_text(json.dumps({"config": {"Labels": {"k": "v"}}}))
    repositories = {"gpufleet/cpu-base": {"gpufleet/cpu-base:abc": image_id}}  # dockerd's short names
    (store / "repositories.json").write_text(json.dumps({"Repositories": repositories}))
    assert images.stored_image_id(tmp_path, "gpufleet/cpu-base:abc") == image_id
    assert images.stored_image_id(tmp_path, "gpufleet/cpu-base:other") is None
    assert images.stored_labels(tmp_path, image_id) == {"k": "v"}
    (content / ("a" * 64)).unlink()
    assert images.stored_image_id(tmp_path, "gpufleet/cpu-base:abc") is None  # dangling: ask the daemon
    assert images.stored_image_id(tmp_path / "nothing", "gpufleet/cpu-base:abc") is None


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(images.CACHE_ENV, raising=False)
    assert images.cache_dir() == Path("/var/cache/gpufleet")
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path))
    assert images.cache_dir() == tmp_path


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text("".join(f"line {n}\n" for n in range(40)))
    tail = images.log_tail(log).split("\n    ")
    assert tail[0] == "line 25"
    assert tail[-1] == "line 39"
    assert images.log_tail(tmp_path / "missing.log") == "(no log)"


def test_a_failed_step_names_itself_and_shows_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path))
    log = images._open_log("step")
    script = "for n in $(seq 1 30); do echo out $n; done; echo bad >&2; exit 3"
    with pytest.raises(GpufleetError) as caught:
        images._run("base: debootstrap", [["sh", "-c", script]], log, lambda _: None)
    message = str(caught.value)
    assert message.startswith("image: base: debootstrap failed (sh exited 3)")
    assert str(log) in message
    assert "out 30" in message
    assert "bad" in message
    assert "out 10\n" not in message


def test_a_pipeline_fails_when_its_first_command_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path))
    log = images._open_log("pipe")
    with pytest.raises(GpufleetError, match=r"failed \(false exited 1\)"):
        images._run("x", [["false"], ["cat"]], log, lambda _: None)


def test_a_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(GpufleetError, match=r"apt-get install -y debootstrap"):
        images._require("debootstrap")
    with pytest.raises(GpufleetError, match=r"apt-get install -y docker\.io"):
        images._require_docker()


# --- real builds (root) -----------------------------------------------------------------------


def real(test: Callable[..., None]) -> Callable[..., None]:
    """Root with debootstrap and dockerd; slow (a cold cache builds the base: ~3 min)."""
    for mark in (needs_root("debootstrap", "dockerd"), pytest.mark.slow, pytest.mark.timeout(1500)):
        test = mark(test)
    return test


def _quiet(_: str) -> None:
    pass


def other_user(spec: ClusterSpec) -> ClusterSpec:
    return spec.model_copy(update={"ssh": spec.ssh.model_copy(update={"user": "imagetest"})})


@pytest.fixture(scope="module")
def built() -> tuple[images.LocalImage, list[images.BuildStep]]:
    """The local stack's image, built (or found in the machine's cache) once for this module."""
    messages: list[str] = []
    image, steps = images.ensure_image(stack_spec("local"), messages.append)
    assert all(m.startswith("image: ") for m in messages)
    return image, steps


@pytest.fixture
def fresh_daemon() -> Iterator[dockerd.Daemon]:
    """A host-like daemon with an empty data-root (removed after)."""
    folder = Path(tempfile.mkdtemp(prefix="gpufleet-test-"))
    paths = dockerd.DaemonPaths(data_root=folder / "data", run_dir=folder / "run")
    daemon = dockerd.start(paths)
    try:
        dockerd.wait_ready(daemon, "test daemon")
        yield daemon
    finally:
        dockerd.stop(daemon.pid, paths)
        dockerd.unmount_below(folder)
        shutil.rmtree(folder, ignore_errors=True)


@real
@pytest.mark.parametrize("buildkit", [False, True], ids=["classic", "buildkit"])
@pytest.mark.usefixtures("built")
def test_rendered_dockerfile_builds_offline(buildkit: bool) -> None:
    """FROM the local stand-in base, no registry, with either builder."""
    pytest.importorskip("torch")
    spec = stack_spec("local")
    recipe = images.machine_recipe()
    tag = f"gpufleet/builder-test:{'buildkit' if buildkit else 'classic'}"
    with images._machine_lock(_quiet), images._builder(_quiet) as builder:
        base_id = builder.image_id(recipe.tag)
        assert base_id is not None
        context = images.build_context(spec, recipe.tag, base_id)
        daemon = builder.get()
        try:
            images.docker_build(
                daemon, context, tag, _quiet, buildkit=buildkit, log_name=f"test-{tag.rsplit(':', 1)[1]}"
            )
            probe = dockerd.docker_cli(
                daemon, "run", "--rm", "--network", "host", "--entrypoint", "/usr/local/bin/gpufleet-python",
                tag, "-c", "import torch, numpy, os, sys; print(os.access('/usr/local/bin/gpufleet-entrypoint', os.X_OK))",
            )  # fmt: skip
            assert probe.returncode == 0, probe.stderr
            assert probe.stdout.strip() == "True"
        finally:
            dockerd.docker_cli(daemon, "rmi", "--force", tag)


@real
def test_ensure_image_twice_is_cached(built: tuple[images.LocalImage, list[images.BuildStep]]) -> None:
    image, _ = built
    messages: list[str] = []
    again, steps = images.ensure_image(stack_spec("local"), messages.append)
    assert again == image
    assert [(s.name, s.cached) for s in steps] == [("base", True), ("image", True)]
    assert any(m.endswith(" cached") and "cpu-base" in m for m in messages)
    assert image.tag.startswith("registry.example.com/ml/chatbot-train:gpufleet-")
    assert image.id.startswith("sha256:")


@real
def test_a_changed_input_makes_a_new_tag(built: tuple[images.LocalImage, list[images.BuildStep]]) -> None:
    image, _ = built
    changed, steps = images.ensure_image(other_user(stack_spec("local")), _quiet)
    assert changed.tag != image.tag
    assert changed.id != image.id
    assert steps[0].cached  # same base


@real
def test_load_into_a_fresh_daemon_then_cached(
    built: tuple[images.LocalImage, list[images.BuildStep]], fresh_daemon: dockerd.Daemon
) -> None:
    image, _ = built
    step = images.load_into(image, fresh_daemon, "node-x", _quiet)
    assert (step.name, step.cached) == ("load node-x", False)
    ran = subprocess.run(
        fresh_daemon.docker(
            "run",
            "--rm",
            "--network",
            "host",
            "--entrypoint",
            "python",
            image.tag,
            "-c",
            "import torch, numpy",
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    again = images.load_into(image, fresh_daemon, "node-x", _quiet)
    assert (again.name, again.cached) == ("load node-x", True)


@real
def test_a_base_that_cannot_be_pulled_is_a_clear_error() -> None:
    spec = stack_spec("local")
    base = "registry.invalid/nobody/no-such-base:1"
    given = spec.model_copy(
        update={"image": spec.image.model_validate({**spec.image.model_dump(), "base": base})}
    )
    with pytest.raises(GpufleetError) as caught:
        images.ensure_image(given, _quiet)
    message = str(caught.value)
    assert "\n" not in message
    assert f"image.base {base!r}" in message
    assert "leave image.base unset" in message
    assert "load -i" in message
