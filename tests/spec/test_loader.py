"""Stack files -> spec: where specs come from, and errors for malformed files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpufleet.errors import GpufleetError, SpecError
from gpufleet.spec import load_spec, resolve_stack_file
from gpufleet.spec.loader import find_project_root
from tests.conftest import PROJECT_ROOT, STACKS_DIR
from tests.spec.test_models import valid_spec


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stack_name_resolves_through_pulumi_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT / "tests")
    assert resolve_stack_file("local", None) == STACKS_DIR / "Pulumi.local.yaml"


def test_unknown_stack_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_ROOT)
    with pytest.raises(GpufleetError, match=r"no stack 'prod'.*example-ib"):
        resolve_stack_file("prod", None)


def test_stack_and_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(GpufleetError, match="exactly one"):
        resolve_stack_file("local", tmp_path / "x.yaml")
    with pytest.raises(GpufleetError, match="exactly one"):
        resolve_stack_file(None, None)


def test_project_root_falls_back_to_gpufleet_own(tmp_path: Path) -> None:
    assert find_project_root(tmp_path) == PROJECT_ROOT


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"config": {"gpufleet:cluster": valid_spec()}}, id="stack-file"),
        pytest.param({"gpufleet:cluster": valid_spec()}, id="config-only"),
        pytest.param(valid_spec(), id="bare-spec"),
    ],
)
def test_accepted_file_shapes(tmp_path: Path, document: object) -> None:
    spec = load_spec(write(tmp_path / "s.yaml", yaml.safe_dump(document)))
    assert spec.name == "test"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("config:\n  other:key: 1\n", "no config key 'gpufleet:cluster'", id="no-key"),
        pytest.param("config: [\n", "not valid YAML: line 2", id="syntax"),
        pytest.param(
            "config:\n  gpufleet:cluster:\n    name: a\n    name: b\n",
            "duplicate key 'name'",
            id="duplicate-key",
        ),
        pytest.param("- 1\n- 2\n", "expected a Pulumi stack file", id="list"),
        pytest.param("config:\n  gpufleet:cluster: 5\n", "valid dictionary", id="not-a-mapping"),
    ],
)
def test_malformed_files_are_spec_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(write(tmp_path / "s.yaml", text))
    assert expected in str(caught.value)
    assert "\n" not in caught.value.issues[0].message
