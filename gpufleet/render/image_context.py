"""The image's build context from the spec and its lock: Dockerfile, entrypoint, gpufleet-env/.

Pure: the same spec and lock give the same bytes (``gpufleet render`` writes
them; ``gpufleet build``, the local cluster and Pulumi's TrainingImage build them).
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from gpufleet.environment.lockfile import Lock
from gpufleet.render.templating import render_template

ENV_FOLDER = PurePosixPath("gpufleet-env")
"""Copied to /etc/gpufleet in the image."""
MANIFEST_PATH = "/etc/gpufleet/environment.json"
MANIFEST_LABEL = "org.gpufleet.manifest"


def requirements_lock(lock: Lock) -> str:
    """pip's hash-checking requirements format: every package, ``==`` version, every sha256."""
    blocks = []
    for pin in lock.python:
        hashes = "".join(f" \\\n    --hash={value}" for value in pin.hashes)
        blocks.append(f"{pin.name}=={pin.version}{hashes}\n")
    return "".join(blocks)


def apt_packages(lock: Lock) -> str:
    return "".join(f"{pin.name}={pin.version}\n" for pin in lock.apt.packages)


def apt_sources(lock: Lock) -> str:
    return "".join(f"{line}\n" for line in lock.apt.sources)


def envmanifest_script() -> str:
    return resources.files("gpufleet.hostscripts").joinpath("envmanifest.py").read_text()


def image_env_files(lock: Lock) -> dict[PurePosixPath, str]:
    files = {
        ENV_FOLDER / "requirements.lock": requirements_lock(lock),
        ENV_FOLDER / "apt-packages.txt": apt_packages(lock),
        ENV_FOLDER / "envmanifest.py": envmanifest_script(),
    }
    if lock.apt.snapshot:
        files[ENV_FOLDER / "apt-sources.list"] = apt_sources(lock)
    return files


def dockerfile_values(lock: Lock, lock_name: str) -> dict[str, object]:
    return {
        "base": lock.base.pinned,
        "lock_name": lock_name,
        "snapshot": lock.apt.snapshot,
        "archive": lock.apt.archive,
        "apt_count": len(lock.apt.packages),
        "python_count": len(lock.python),
        "manifest": MANIFEST_PATH,
    }


def render_image_dockerfile(common: dict[str, object], lock: Lock, lock_name: str) -> str:
    return render_template("Dockerfile.j2", **common, **dockerfile_values(lock, lock_name))
