"""Run names, where run folders go, how a run's state follows from its hosts', the code archive."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpufleet.launcher.runs import (
    HOME_RUNS_ROOT,
    HostState,
    check_run_name,
    code_archive,
    first_failed,
    new_run_id,
    run_location,
    spec_hash,
    summarize_states,
)
from tests.conftest import stack_spec


def test_run_id_is_sortable_unique_and_safe() -> None:
    run = new_run_id("/x/My Train_Script.py", now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), token="ab12")
    assert run == "my-train-script-20260102-030405-ab12"
    assert check_run_name(run) == run
    assert new_run_id("t.py") != new_run_id("t.py")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../etc", id="parent"),
        pytest.param("a/b", id="slash"),
        pytest.param("Run", id="upper"),
        pytest.param("a b", id="space"),
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
    ],
)
def test_bad_run_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a run name"):
        check_run_name(name)


def test_runs_go_to_the_first_writable_share() -> None:
    spec = stack_spec("local")  # data (read-only), then checkpoints
    location = run_location(spec)
    assert location.shared
    assert location.root == "/checkpoints/gpufleet-runs"
    assert location.run_dir("r1") == "/checkpoints/gpufleet-runs/r1"


def test_without_a_writable_share_runs_go_home_per_host() -> None:
    spec = stack_spec("local")
    read_only = spec.model_copy(update={"nas": [s for s in spec.nas if s.read_only]})
    location = run_location(read_only)
    assert (location.root, location.shared) == (HOME_RUNS_ROOT, False)


def test_spec_hash_changes_with_the_spec() -> None:
    spec = stack_spec("local")
    other = spec.model_copy(update={"name": "other"})
    assert spec_hash(spec).startswith("sha256:")
    assert spec_hash(spec) == spec_hash(stack_spec("local")) != spec_hash(other)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param({"a": "succeeded", "b": "succeeded"}, "succeeded", id="all-ok"),
        pytest.param({"a": "succeeded", "b": "running"}, "running", id="one-running"),
        pytest.param({"a": "stopped", "b": "failed"}, "failed", id="failed-beats-stopped"),
        pytest.param({"a": "stopped", "b": "stopped"}, "stopped", id="stopped"),
        pytest.param({"a": "lost", "b": "stopped"}, "failed", id="lost-is-a-failure"),
        pytest.param({"a": "stopped", "b": "unreachable"}, "stopped", id="stopped-one-unreachable"),
        pytest.param({"a": "succeeded", "b": "unreachable"}, "running", id="not-known-to-have-ended"),
    ],
)
def test_run_state_from_host_states(states: dict[str, str], expected: str) -> None:
    assert summarize_states(states) == expected


@pytest.mark.parametrize(
    ("states", "min_hosts", "expected"),
    [
        pytest.param({"a": "succeeded", "b": "succeeded", "c": "lost"}, 2, "succeeded", id="re-formed"),
        pytest.param({"a": "succeeded", "b": "lost", "c": "lost"}, 2, "failed", id="below-min"),
        pytest.param({"a": "succeeded", "b": "succeeded", "c": "lost"}, 3, "failed", id="gang"),
        pytest.param({"a": "succeeded", "b": "failed", "c": "lost"}, 1, "failed", id="a-failure-fails"),
    ],
)
def test_an_elastic_run_succeeds_on_min_hosts(states: dict[str, str], min_hosts: int, expected: str) -> None:
    assert summarize_states(states, min_hosts) == expected


def test_first_failed_is_where_the_failure_began_not_a_stopped_host() -> None:
    states = {
        "node-0": HostState(state="stopped", ended=100.0),
        # node-1's torchrun ended first, but its first worker died after node-2's.
        "node-1": HostState(state="failed", ended=101.0, failed_at=100.5),
        "node-2": HostState(state="failed", ended=103.0, failed_at=100.2),
    }
    assert first_failed(states) == "node-2"
    assert first_failed({"a": HostState(state="succeeded", ended=1.0)}) is None


def test_a_lost_host_is_named_before_the_hosts_whose_workers_died_of_it() -> None:
    states = {
        "node-0": HostState(state="failed", ended=100.0, failed_at=99.0),
        "node-1": HostState(state="lost", ended=104.0),
    }
    assert first_failed(states) == "node-1"


def test_a_host_state_is_one_of_its_literal_states() -> None:
    with pytest.raises(ValueError, match="state"):
        HostState.model_validate({"state": "stopped: host x failed"})


def test_code_archive_skips_caches_and_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    for skipped in ("__pycache__", "checkpoints", ".git"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "junk").write_text("junk")
    with tarfile.open(fileobj=io.BytesIO(code_archive(tmp_path))) as tar:
        assert sorted(tar.getnames()) == ["pkg/m.py", "train.py"]
