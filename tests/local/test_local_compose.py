"""A local host's compose file is the production one with exactly the named differences (pure)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gpufleet.local.containers import local_adjustment
from gpufleet.render import render_cluster
from tests.conftest import stack_spec


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for index, item in enumerate(value) for k, v in _flat(item, f"{path}/{index}").items()}
    return {path: value}


def test_the_local_compose_file_differs_only_in_the_named_ways() -> None:
    spec = stack_spec("local")
    folders = {f"{spec.name}-{share.name}": Path(f"/nas/{share.name}") for share in spec.nas}
    workspaces = {host.name: Path(f"/nas/_workspaces/{host.name}") for host in spec.hosts}
    adjust = local_adjustment(
        "registry.example.com/ml/chatbot-train:gpufleet-0123456789ab", folders, 8 << 20, workspaces
    )
    path = PurePosixPath("hosts", spec.hosts[0].name, "docker-compose.yml")
    production = _flat(yaml.safe_load(render_cluster(spec)[path]))
    local = _flat(yaml.safe_load(render_cluster(spec, adjust=adjust)[path]))
    changed = {key for key in production.keys() | local.keys() if production.get(key) != local.get(key)}
    named = {
        "/services/train/image",
        "/services/train/ulimits/memlock/soft",
        "/services/train/ulimits/memlock/hard",
    }
    volumes = {key for key in changed if key.startswith("/volumes/")}
    assert changed - volumes == named
    workspace = f"/volumes/{spec.name}-workspace/driver_opts"
    assert local[f"{workspace}/device"] == f"/nas/_workspaces/{spec.hosts[0].name}"
    assert {key.rsplit("/", 1)[-1] for key in volumes} == {"type", "o", "device"}
