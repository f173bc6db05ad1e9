"""Recorded hosts (tests/fixtures/hosts/<name>/, built by generate.py there) as facts and specs."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from gpufleet.facts import HostFacts, parse_facts
from gpufleet.probe import probe
from gpufleet.spec import ClusterSpec, parse_spec
from tests.conftest import stack_spec

HOSTS_DIR = Path(__file__).resolve().parent / "fixtures" / "hosts"
RECORDED = sorted(
    p.name for p in HOSTS_DIR.iterdir() if (p / "sys").is_dir() or (p / "runtime.json").is_file()
)


@cache
def raw_facts(name: str) -> dict[str, Any]:
    return probe(HOSTS_DIR / name)


def facts(name: str, **changes: Any) -> HostFacts:
    """The probe's facts of a recorded host, with top-level keys replaced by ``changes``."""
    return parse_facts({**raw_facts(name), **changes}, name)


def spec_with(stack: str, changes: dict[str, Any] | None = None) -> ClusterSpec:
    """A shipped stack's spec with dotted-path changes (``{"network.fabric": "auto"}``), re-validated."""
    data = stack_spec(stack).model_dump()
    for path, value in (changes or {}).items():
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    return parse_spec(data, source=stack)
