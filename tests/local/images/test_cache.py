"""The image cache: its folder, and what a stopped daemon's files say it holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpufleet.local.images import cache


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
    assert cache.normalized_reference(ref) == stored
    familiar = stored.removeprefix("docker.io/").removeprefix("library/")
    assert cache.familiar_reference(ref) == familiar


def test_stored_image_id_reads_a_stopped_daemons_files(tmp_path: Path) -> None:
    store = tmp_path / "image" / "overlay2"
    content = store / "imagedb" / "content" / "sha256"
    content.mkdir(parents=True)
    image_id = "sha256:" + "a" * 64
    (content / ("a" * 64)).write_text(json.dumps({"config": {"Labels": {"k": "v"}}}))
    repositories = {"gpufleet/cpu-base": {"gpufleet/cpu-base:abc": image_id}}  # dockerd's short names
    (store / "repositories.json").write_text(json.dumps({"Repositories": repositories}))
    assert cache.stored_image_id(tmp_path, "gpufleet/cpu-base:abc") == image_id
    assert cache.stored_image_id(tmp_path, "gpufleet/cpu-base:other") is None
    assert cache.stored_labels(tmp_path, image_id) == {"k": "v"}
    (content / ("a" * 64)).unlink()
    assert cache.stored_image_id(tmp_path, "gpufleet/cpu-base:abc") is None  # dangling: ask the daemon
    assert cache.stored_image_id(tmp_path / "nothing", "gpufleet/cpu-base:abc") is None


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    assert cache.cache_dir() == Path("/var/cache/gpufleet")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    assert cache.cache_dir() == tmp_path
