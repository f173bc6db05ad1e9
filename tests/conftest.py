"""Shared test helpers. Tests mirror the source tree (tests/spec -> gpufleet/spec, ...)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gpufleet.spec import ClusterSpec, load_spec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STACKS_DIR = PROJECT_ROOT / "stacks"
SHIPPED_STACKS = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in STACKS_DIR.glob("Pulumi.*.yaml"))


def needs_root(*tools: str) -> pytest.MarkDecorator:
    """Skip unless root with the named tools on PATH, saying which is missing."""
    if os.geteuid() != 0:
        return pytest.mark.skip(reason="needs root (network namespaces, sshd, nft); CI runs as root")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return pytest.mark.skip(reason=f"needs {', '.join(missing)} (make setup installs them)")
    return pytest.mark.root


def stack_spec(name: str) -> ClusterSpec:
    return load_spec(STACKS_DIR / f"Pulumi.{name}.yaml")


@pytest.fixture(params=SHIPPED_STACKS)
def shipped_stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)
