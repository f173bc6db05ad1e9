"""Stack files -> spec: where specs come from, and errors for malformed files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.errors import GpufleetError, InputError, SpecError
from gpufleet.spec import load_spec, resolve_stack_file
from gpufleet.spec.loader import MAX_FILE_BYTES, find_project_root
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


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe")
    return folder / "pipe"


def _sparse(folder: Path) -> Path:
    path = folder / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda folder: folder / "missing.yaml", "no such file", id="missing"),
        pytest.param(lambda folder: folder, "is a folder, not a file", id="folder"),
        pytest.param(lambda folder: Path("/dev/null"), "is not a regular file", id="device"),
        pytest.param(_fifo, "is not a regular file", id="fifo"),
        pytest.param(
            lambda folder: write(folder / "f", "x") / "below", "cannot read: Not a directory", id="not-a-dir"
        ),
        pytest.param(_sparse, "a stack file is at most 32 MiB", id="too-big"),
        pytest.param(
            lambda folder: _bytes(folder, "name: caf\u00e9".encode("latin-1")),
            "is not UTF-8 text: byte 0xe9 at offset 9",
            id="latin-1",
        ),
        pytest.param(
            lambda folder: _bytes(folder, "name: x".encode("utf-16")), "(it looks like UTF-16)", id="utf-16"
        ),
        pytest.param(lambda folder: _bytes(folder, bytes(range(256))), "is not UTF-8 text", id="binary"),
    ],
)
def test_unreadable_files_are_input_errors(tmp_path: Path, make: Any, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load_spec(make(tmp_path))
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)


def _bytes(folder: Path, data: bytes) -> Path:
    path = folder / "s.yaml"
    path.write_bytes(data)
    return path


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = _bytes(tmp_path, b"\xef\xbb\xbf" + yaml.safe_dump(valid_spec()).encode())
    assert load_spec(path).name == "test"


def test_pulumi_yaml_is_read_by_the_same_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "Pulumi.yaml", "name: x\nstackConfigDir: !!python/name:os.system\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="outside YAML's core schema"):
        resolve_stack_file("local", None)
