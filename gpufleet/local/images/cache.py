"""The machine-wide image cache: where it lives, what it holds, one builder at a time.

The cache IS the private build daemon's data-root (under :func:`cache_dir`),
shared by every stack, test and demo on the machine. Its files answer "is this
image built?" without starting the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpufleet.local import dockerd

if TYPE_CHECKING:
    from gpufleet.local.images.steps import Progress

CACHE_ENV = "GPUFLEET_CACHE"
"""Overrides the cache folder."""

DEFAULT_CACHE = Path("/var/cache/gpufleet")
"""Machine-wide: the demo, tests and CI share built images."""

DIGEST_CHARS = 12


def cache_dir() -> Path:
    """The machine-wide image cache: ``$GPUFLEET_CACHE``, else /var/cache/gpufleet."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def builder_data_root() -> Path:
    return cache_dir() / "docker" / "builder"


def logs_dir() -> Path:
    return cache_dir() / "logs"


@dataclass(frozen=True)
class LocalImage:
    tag: str  # "<image.name>:gpufleet-<12 hex>"
    id: str  # "sha256:..." image id
    manifest_digest: str | None = None  # "sha256:..." of its /etc/gpufleet/environment.json
    lock_digest: str | None = None  # "sha256:..." of the lock file's bytes it installs


@dataclass(frozen=True)
class BuildStep:
    name: str  # "base", "image", "load node-0", ...
    seconds: float
    cached: bool


def inputs_digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalized_reference(ref: str) -> str:
    """A reference as Docker stores it: ``docker.io/library/`` added, ``:latest`` when untagged."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if not digest and ":" not in last:
        name += ":latest"
    first, sep, _rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        name = ("docker.io/library/" if not sep else "docker.io/") + name
    return f"{name}@{digest}" if digest else name


def familiar_reference(ref: str) -> str:
    """The short form (``debian:latest``, ``gpufleet/cpu-base:abc``): how dockerd's files name images."""
    full = normalized_reference(ref)
    for prefix in ("docker.io/library/", "docker.io/"):
        if full.startswith(prefix):
            return full.removeprefix(prefix)
    return full


def _repository(ref: str) -> str:
    """``docker.io/library/debian:12`` -> ``docker.io/library/debian`` (the same for ``@sha256:``)."""
    name = ref.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def stored_image_id(data_root: Path, ref: str) -> str | None:
    """The image id a stopped daemon's data-root tags ``ref`` with, read from its files.

    Lets a cached build answer without starting the daemon. None when unsure:
    the caller then asks the daemon itself.
    """
    store = data_root / "image" / dockerd.STORAGE_DRIVER
    try:
        repositories = json.loads((store / "repositories.json").read_text())["Repositories"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(repositories, dict):
        return None
    image_id = None
    for wanted in (familiar_reference(ref), normalized_reference(ref)):
        tags = repositories.get(_repository(wanted))
        image_id = tags.get(wanted) if isinstance(tags, dict) else None
        if image_id is not None:
            break
    if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
        return None
    if not (store / "imagedb" / "content" / "sha256" / image_id.removeprefix("sha256:")).is_file():
        return None
    return image_id


def stored_labels(data_root: Path, image_id: str) -> dict[str, str]:
    path = data_root / "image" / dockerd.STORAGE_DRIVER / "imagedb" / "content" / "sha256"
    try:
        config = json.loads((path / image_id.removeprefix("sha256:")).read_text())
        labels = (config.get("config") or {}).get("Labels") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


@contextlib.contextmanager
def machine_lock(progress: Progress) -> Iterator[None]:
    """One build or load at a time on this machine (cache_dir()/lock)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"image: waiting for another gpufleet build or load on this machine ({cache / 'lock'})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Unmount anything below (debootstrap may leave /proc and /sys mounted), then delete."""
    if not path.exists():
        return
    dockerd.unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True, check=False)


def clean_leftovers() -> None:
    """Root folders of a build that was killed (only under the lock: nobody else builds now)."""
    work = cache_dir() / "tmp"
    if work.is_dir():
        for path in work.iterdir():
            remove_tree(path)
