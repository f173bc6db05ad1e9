"""`gpufleet validate` and `render` as a user runs them: exit codes, one line per error."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpufleet.errors import SpecError
from gpufleet.spec import parse_spec
from tests.cli.run import run_main
from tests.conftest import PROJECT_ROOT
from tests.spec.test_models import valid_spec

GPUFLEET = Path(sys.executable).parent / "gpufleet"


def write_stack(folder: Path, spec: Any) -> Path:
    path = folder / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": {"gpufleet:cluster": spec}}, allow_unicode=True))
    return path


def test_valid_stack_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_main(["validate", "-f", str(write_stack(tmp_path, valid_spec()))], capsys)
    assert code == 0
    assert "is valid" in out


def test_warnings_go_to_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = valid_spec()
    del spec["image"]["digest"]
    code, out, err = run_main(["validate", "-f", str(write_stack(tmp_path, spec))], capsys)
    assert code == 0
    assert "image.digest is not set" in err and "image.digest" not in out


def test_invalid_stack_exits_2_with_one_line_per_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = valid_spec()
    spec["hosts"][1]["address"] = "192.168.0.1"
    spec["ssh"]["port"] = 29400
    path = write_stack(tmp_path, spec)
    code, _, err = run_main(["validate", "-f", str(path)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}: cluster.hosts[1].address: host 'gpu-1': 192.168.0.1 is outside network.cluster_cidr "
        "10.10.0.0/24; use an address in that network or widen cluster_cidr",
        f"{path}: cluster.network.rdzv_port: port 29400 collides with ssh.port; pick another port",
    ]


def test_stack_name_and_missing_file_are_clear_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_main(["validate", "-f", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "no such file" in err
    code, _, err = run_main(["validate", "--stack", "local", "-f", str(tmp_path / "x.yaml")], capsys)
    assert code == 2 and "exactly one" in err


def test_render_writes_the_tree(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_main(["render", "--stack", "example-roce", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, out
    assert (tmp_path / "out/hosts/roce-b/nftables.conf").is_file()
    assert (tmp_path / "out/hostfile").read_text() == "172.16.0.21 slots=8\n172.16.0.22 slots=8\n"


def test_render_of_an_invalid_stack_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    spec = valid_spec()
    spec["nccl"] = {"PATH": "/tmp"}
    code, _, _ = run_main(
        ["render", "-f", str(write_stack(tmp_path, spec)), "--out", str(tmp_path / "out")], capsys
    )
    assert code == 2
    assert not (tmp_path / "out").exists()


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed command: exit code 2, field path, and no Python traceback."""
    spec = valid_spec()
    spec["ssh"]["authorized_keys"] = ["-----BEGIN OPENSSH PRIVATE KEY-----"]
    path = write_stack(tmp_path, spec)
    done = subprocess.run(
        [str(GPUFLEET), "validate", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "cluster.ssh.authorized_keys: [0]: this is a PRIVATE key" in done.stderr
    assert "Traceback" not in done.stderr
    ok = subprocess.run(
        [str(GPUFLEET), "validate", "--stack", "local"],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert ok.returncode == 0, ok.stderr


# --- property: malformed specs never end in a traceback ------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def malformed_specs(draw: st.DrawFn) -> Any:
    """A valid spec with one to three nodes replaced, deleted or given unknown keys."""
    spec = copy.deepcopy(valid_spec())
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(spec) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = spec
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "unknown-key"]))
        if action == "replace" or not isinstance(parent, dict):
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    return spec


LINE = re.compile(r"^.+: cluster(\.|\[|:|$)")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(malformed_specs(), json_values))
def test_malformed_specs_exit_2_with_messages(
    spec: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_stack(tmp_path, spec)
    try:
        parse_spec(json.loads(json.dumps(spec)))
        expected = 0
    except SpecError:
        expected = 2
    code, _, err = run_main(["validate", "-f", str(path)], capsys)
    assert code == expected, err
    if expected == 2:
        lines = err.splitlines()
        assert lines and all(LINE.match(line) for line in lines), err
        assert "Traceback" not in err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_files_exit_2(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_text(text)
    code, _, err = run_main(["validate", "-f", str(path)], capsys)
    assert code == 2, err
    assert all(LINE.match(line) for line in err.splitlines()), err


# --- hostile input: exit 2, one clear line, no traceback, bounded output and time -----------

MAX_ERR_BYTES = 10 * 1024


def _stack_text(spec: Any) -> str:
    return yaml.safe_dump({"config": {"gpufleet:cluster": spec}}, allow_unicode=True, width=10**9)


def _with_name(name: str) -> str:
    spec = valid_spec()
    spec["name"] = name
    return _stack_text(spec)


def _erroneous_hosts(count: int) -> str:
    spec = valid_spec()
    spec["hosts"] = [{"name": f"H{i}", "address": "10.10.0.300", "gpus": -1} for i in range(count)]
    return _stack_text(spec)


HOSTILE: list[Any] = [
    pytest.param(b"\x00\xff\xfe binary", "is not UTF-8 text", id="binary"),
    pytest.param(_stack_text(valid_spec()).encode("utf-16"), "it looks like UTF-16", id="utf-16"),
    pytest.param(_stack_text(valid_spec()) + "---\nother: 1\n", "a second YAML document", id="two-documents"),
    pytest.param("config: " + "[" * 500 + "]" * 500, "levels deep", id="deep-list"),
    pytest.param("config: " + "{a: " * 500 + "1" + "}" * 500, "levels deep", id="deep-map"),
    pytest.param(
        "config:\n  ? [gpufleet:cluster]\n  : 1\n", "a mapping key is a list or mapping", id="list-key"
    ),
    pytest.param("config: {{a: 1}: 2}\n", "a mapping key is a list or mapping", id="map-key"),
    pytest.param(
        _stack_text(valid_spec()).replace("name: gpu-0", "name: !!binary Z3B1LTA="),
        "!!binary",
        id="binary-tag",
    ),
    pytest.param(
        "config: !!python/object/apply:os.system ['true']\n",
        "!!python/object/apply:os.system",
        id="python-tag",
    ),
    pytest.param(_with_name("x" * 5_000_000), "is not a valid cluster name", id="5-MB-name"),
    pytest.param(_with_name("bad\nname"), "contains a newline", id="newline-in-name"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("content", "expected"), HOSTILE)
def test_hostile_files_exit_2_with_one_line(
    content: str | bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = run_main(["validate", "-f", str(path)], capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and expected in err, err[:2000]
    assert len(err.encode()) < 1000 and out == ""
    assert err.startswith((f"{path}: cluster", f"error: {path}: "))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda folder: folder / "missing.yaml", "no such file", id="missing"),
        pytest.param(lambda folder: folder, "is a folder", id="folder"),
        pytest.param(lambda folder: Path("/dev/zero"), "is not a regular file", id="device"),
    ],
)
def test_paths_that_are_no_stack_file_exit_2(
    make: Any, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["validate", "-f", str(make(tmp_path))], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_20000_erroneous_hosts_print_a_screenful(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(_erroneous_hosts(20_000))
    code, out, err = run_main(["validate", "-f", str(path)], capsys)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 21 and f"and {3 * 20_000 - 20:,} more problems" in lines[-1], lines[-1]
    assert len(err.encode()) < MAX_ERR_BYTES
    assert all(LINE.match(line) for line in lines)


# --- property: hostile text never ends in a traceback -------------------------------------

_TAGS = ["!!binary", "!!python/object:os.system", "!!python/name:os.path", "!!set", "!foo", "!!timestamp"]
_KEY_LINE = re.compile(r"^(\s*(?:- )?)([a-z_:]+):( |$)", re.MULTILINE)


@st.composite
def hostile_texts(draw: st.DrawFn) -> bytes:
    """A stack file turned hostile: a tag, deep nesting, a collection key, two documents, other bytes."""
    text = _stack_text(draw(st.one_of(st.just(valid_spec()), malformed_specs())))
    keys = list(_KEY_LINE.finditer(text))
    kind = draw(st.sampled_from(["tag", "deep", "collection-key", "documents", "encoding", "bytes"]))
    if kind in ("tag", "deep", "collection-key") and keys:
        at = draw(st.sampled_from(keys))
        if kind == "tag":
            insert = f"{draw(st.sampled_from(_TAGS))} "
            text = text[: at.end()] + insert + text[at.end() :] if at.group(3) == " " else text
            if at.group(3) != " ":
                text = text[: at.start(2)] + f"{insert}{at.group(2)}" + text[at.end(2) :]
        elif kind == "deep":
            depth = draw(st.integers(33, 3000))
            text = text[: at.start(2)] + f"{at.group(2)}: {'[' * depth}{']' * depth}\n" + text[at.start(2) :]
        else:
            key = draw(st.sampled_from([f"[{at.group(2)}]", f"{{{at.group(2)}: 1}}"]))
            text = text[: at.start(2)] + key + text[at.end(2) :]
    elif kind == "documents":
        text += draw(st.sampled_from(["---\n", "--- x\n", "...\n---\na: 1\n"]))
    data = text.encode("utf-8")
    if kind == "encoding":
        data = text.encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-16-be"])))
    elif kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8).filter(_not_utf8)) + data[at:]
    return data


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hostile_texts())
def test_hostile_texts_exit_2_with_bounded_lines(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_bytes(data)
    code, out, err = run_main(["validate", "-f", str(path)], capsys)
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert 1 <= len(lines) <= 21 and len(err.encode()) < MAX_ERR_BYTES, err
    assert all(LINE.match(line) or line.startswith(f"error: {path}: ") for line in lines), err
    assert "Traceback" not in err and out == ""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_exit_0_or_2(data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(data)
    code, _, err = run_main(["validate", "-f", str(path)], capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
