"""The README's spec reference is generated from the models and must be current."""

from __future__ import annotations

from gpufleet.spec.reference import spec_reference
from tests.conftest import PROJECT_ROOT


def test_readme_spec_reference_is_current() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert spec_reference() in readme, "stale: run .venv/bin/python scripts/spec_reference.py"


def test_reference_lists_every_host_field() -> None:
    from gpufleet.spec.models import HostSpec

    reference = spec_reference()
    for name in HostSpec.model_fields:
        assert f"`hosts[].{name}`" in reference
