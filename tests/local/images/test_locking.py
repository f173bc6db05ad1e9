"""Locks resolved for real in the stand-in base, and what the image then installs (root, slow).

A package index this test controls (a folder of wheels it builds, served over
HTTP on 127.0.0.1) shows what a lock is for: v1 is locked, v2 appears, a
no-cache rebuild still installs v1.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.environment.lockfile import lock_bytes
from gpufleet.environment.resolve import LockFailed
from gpufleet.errors import GpufleetError
from gpufleet.local import images
from gpufleet.local.images.builder import build_daemon
from gpufleet.local.images.cache import machine_lock
from gpufleet.spec.models import ClusterSpec
from tests.conftest import stack_spec
from tests.local.images.conftest import quiet, real

PROBE = "gpufleet-repro-probe"


def with_packages(*python: str) -> ClusterSpec:
    spec = stack_spec("local")
    image = spec.image.model_copy(update={"python_packages": list(python)})
    return spec.model_copy(update={"image": image})


def build_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of ``gpufleet-repro-probe`` at ``version`` (what any build backend writes)."""
    module, dist_info = "gpufleet_repro_probe", f"gpufleet_repro_probe-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gpufleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / f"gpufleet_repro_probe-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


@contextlib.contextmanager
def served(folder: Path) -> Iterator[str]:
    """``folder`` as a find-links page on 127.0.0.1 (the lock's container and the build use the host network)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def installed(image: images.LocalImage, code: str) -> str:
    with machine_lock(quiet), build_daemon(quiet) as builder:
        ran = builder.client().run(
            "run", "--rm", "--network", "none", "--entrypoint", "python", image.id, "-c", code
        )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()


@real
def test_the_same_inputs_lock_to_the_same_bytes_and_the_package_imports() -> None:
    spec = with_packages("six")
    first = images.lock_image(spec, None, False, quiet)
    second = images.lock_image(spec, None, False, quiet)
    assert lock_bytes(first) == lock_bytes(second)
    [six] = [pin for pin in first.python if pin.name == "six"]
    assert all(h.startswith("sha256:") for h in six.hashes)
    assert not any(pin.name in ("torch", "numpy") for pin in first.python), (
        "the base's torch is never relocked"
    )
    image, _ = images.ensure_image(spec, quiet, lock=first)
    versions = installed(image, "import six, torch; print(six.__version__, torch.__version__)").split()
    assert versions[0] == six.version
    assert f"torch=={versions[1]}" in first.base_python


@real
def test_a_lock_keeps_v1_when_v2_appears_and_no_cache_builds_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_wheel(tmp_path, "1.0")
    with served(tmp_path) as url:
        monkeypatch.setenv("PIP_FIND_LINKS", url)
        spec = with_packages(PROBE)
        lock = images.lock_image(spec, None, False, quiet)
        assert [(p.name, p.version) for p in lock.python if p.name == PROBE] == [(PROBE, "1.0")]
        build_wheel(tmp_path, "2.0")  # the index moves on
        first, _ = images.ensure_image(spec, quiet, lock=lock, no_cache=True)
        second, _ = images.ensure_image(spec, quiet, lock=lock, no_cache=True)
        assert installed(first, "import gpufleet_repro_probe as p; print(p.VERSION)") == "1.0"
        assert first.manifest_digest == second.manifest_digest
        relocked = images.lock_image(spec, lock, False, quiet)  # re-locking keeps what still fits
        assert [p.version for p in relocked.python if p.name == PROBE] == ["1.0"]
        upgraded = images.lock_image(spec, lock, True, quiet)
        assert [p.version for p in upgraded.python if p.name == PROBE] == ["2.0"]


@real
def test_an_unknown_package_names_itself_with_the_resolvers_reason() -> None:
    with pytest.raises(LockFailed) as caught:
        images.lock_image(with_packages("gpufleet-no-such-package-anywhere==1.0"), None, False, quiet)
    message = str(caught.value)
    assert message.startswith("lock: Python packages cannot be resolved in gpufleet/cpu-base:")
    assert "gpufleet-no-such-package-anywhere" in message
    assert len(message.splitlines()) <= 3


@real
def test_a_hand_edited_hash_fails_the_build_naming_the_package() -> None:
    spec = with_packages("six")
    lock = images.lock_image(spec, None, False, quiet)
    pins = tuple(
        pin.model_copy(update={"hashes": ("sha256:" + "0" * 64,)}) if pin.name == "six" else pin
        for pin in lock.python
    )
    with pytest.raises(
        GpufleetError, match=r"pip refused six==[0-9.]+: its file does not match the lock's sha256"
    ):
        images.ensure_image(spec, quiet, lock=lock.model_copy(update={"python": pins}), no_cache=True)
