from pathlib import PurePosixPath

from gpufleet.environment.lockfile import AptLock, AptPin, Lock, LockedBase, PythonPin
from gpufleet.environment.packages import EnvironmentInputs
from gpufleet.render.image_context import (
    ENV_FOLDER,
    image_env_files,
    render_image_dockerfile,
    requirements_lock,
)

COMMON = {
    "cluster": "prod",
    "user": "trainer",
    "uid": 1000,
    "ssh_dir": "/etc/gpufleet/ssh",
    "staging_dir": "/etc/gpufleet/staging",
    "workspace": "/workspace",
    "python": "/usr/local/bin/gpufleet-python",
}


def production_lock(snapshot: str | None) -> Lock:
    return Lock(
        inputs=EnvironmentInputs(
            base="pytorch/pytorch:2.9.0", python_packages=("six",), apt_packages=("procps",)
        ),
        base=LockedBase(
            reference="pytorch/pytorch:2.9.0", digest="sha256:" + "b" * 64, python="3.11.9", os="ubuntu 22.04"
        ),
        python=(PythonPin(name="six", version="1.17.0", hashes=("sha256:aa", "sha256:bb")),),
        apt=AptLock(
            archive="ubuntu" if snapshot else None,
            snapshot=snapshot,
            sources=("deb https://snapshot.ubuntu.com/ubuntu/20261204T000000Z/ jammy main",)
            if snapshot
            else (),
            packages=(AptPin(name="procps", version="2:3.3.17-6ubuntu2"),),
        ),
    )


def test_python_packages_install_only_by_version_and_hash() -> None:
    assert (
        requirements_lock(production_lock(None))
        == "six==1.17.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
    )


def test_a_production_dockerfile_builds_from_the_base_digest_and_the_apt_snapshot() -> None:
    lock = production_lock("20261204T000000Z")
    text = render_image_dockerfile(COMMON, lock, "Pulumi.prod.lock")
    assert "FROM pytorch/pytorch:2.9.0@sha256:" + "b" * 64 in text
    assert "Dir::Etc::SourceList=/etc/gpufleet/apt-sources.list" in text
    assert "--require-hashes --no-deps" in text
    assert text.rstrip().endswith(
        "RUN python /etc/gpufleet/envmanifest.py write /etc/gpufleet/environment.json"
    )
    files = image_env_files(lock)
    assert files[ENV_FOLDER / "apt-packages.txt"] == "procps=2:3.3.17-6ubuntu2\n"
    assert files[ENV_FOLDER / "apt-sources.list"].startswith("deb https://snapshot.ubuntu.com/ubuntu/")


def test_without_a_snapshot_apt_uses_the_bases_own_sources() -> None:
    lock = production_lock(None)
    text = render_image_dockerfile(COMMON, lock, "Pulumi.local.lock")
    assert "apt-sources.list" not in text
    assert PurePosixPath(ENV_FOLDER / "apt-sources.list") not in image_env_files(lock)
