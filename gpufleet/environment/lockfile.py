"""``Pulumi.<stack>.lock``: every package of the image at an exact version, in canonical JSON.

Canonical (sorted keys, fixed indent, a final newline) so the same resolution
is the same bytes: the file is diffable in review and its sha256 names it in
run.json. It holds no index URL and no credentials.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpufleet.environment.packages import EnvironmentInputs
from gpufleet.errors import InputError

LOCK_VERSION = 1


class LockModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LockedBase(LockModel):
    reference: str  # image.base as written, or the stand-in's tag
    digest: str | None = None  # the registry digest it resolved to (production bases)
    image_id: str | None = None  # the local image id (a base loaded into the local cache)
    python: str = ""  # "3.11.2": the base's interpreter, which the hashes are for
    os: str = ""  # "debian 12", "ubuntu 22.04"

    @property
    def pinned(self) -> str:
        """What the Dockerfile builds FROM: by digest when the registry gave one."""
        return f"{self.reference.split('@')[0]}@{self.digest}" if self.digest else self.reference


class PythonPin(LockModel):
    name: str
    version: str
    hashes: tuple[str, ...] = Field(min_length=1)  # "sha256:<hex>", sorted


class AptPin(LockModel):
    name: str  # "openssh-server", or "libc6:amd64" when the arch is not the native one
    version: str


class AptLock(LockModel):
    archive: str | None = None  # "debian" or "ubuntu" when installed from its snapshot service
    snapshot: str | None = None  # "20261204T000000Z"
    sources: tuple[str, ...] = ()  # one-line sources at that snapshot (vendor ones as they were)
    packages: tuple[AptPin, ...] = ()


class Lock(LockModel):
    version: int = LOCK_VERSION
    inputs: EnvironmentInputs
    base: LockedBase
    python: tuple[PythonPin, ...] = ()
    base_python: tuple[str, ...] = ()  # "torch==2.13.0": what the base ships (never replaced)
    apt: AptLock = AptLock()


def lock_path(stack_file: Path) -> Path:
    """``Pulumi.<stack>.yaml`` -> ``Pulumi.<stack>.lock``; any other ``X.yaml`` -> ``X.lock``."""
    return stack_file.with_suffix(".lock")


def lock_bytes(lock: Lock) -> bytes:
    return (json.dumps(lock.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


def lock_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_lock(path: Path, lock: Lock) -> None:
    """Atomically: a killed lock never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(lock_bytes(lock))
    temporary.replace(path)


def read_lock(path: Path) -> Lock | None:
    """The lock next to a stack file; None when there is none. A damaged one is an InputError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise InputError(f"{path}: cannot read the lock: {error.strerror}") from None
    try:
        lock = Lock.model_validate_json(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(
            f"{path}: not a gpufleet lock ({where or 'file'}: {first['msg']}); "
            "recreate it with `gpufleet lock`"
        ) from None
    if lock.version != LOCK_VERSION:
        raise InputError(
            f"{path}: lock version {lock.version}, this gpufleet writes {LOCK_VERSION}; run `gpufleet lock`"
        )
    return lock


def _listed_change(what: str, locked: tuple[str, ...], wanted: tuple[str, ...]) -> str:
    added = [item for item in wanted if item not in locked]
    removed = [item for item in locked if item not in wanted]
    parts = [f"+{item}" for item in added] + [f"-{item}" for item in removed]
    return f"{what} changed ({', '.join(parts) or 'order'})"


def lock_problem(lock: Lock, inputs: EnvironmentInputs) -> str | None:
    """Why ``lock`` is not the lock of these inputs (one clause), or None when it is."""
    if lock.inputs.base != inputs.base:
        return f"it was made for base {lock.inputs.base}, the spec builds on {inputs.base}"
    if lock.inputs.python_packages != inputs.python_packages:
        return _listed_change("python packages", lock.inputs.python_packages, inputs.python_packages)
    if lock.inputs.apt_packages != inputs.apt_packages:
        return _listed_change("apt packages", lock.inputs.apt_packages, inputs.apt_packages)
    return None
