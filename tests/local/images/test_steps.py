"""Build steps: a failure names its step and shows its log; a missing tool names its package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpufleet.errors import GpufleetError
from gpufleet.local.images import cache, steps


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "step.log"
    log.write_text("".join(f"line {n}\n" for n in range(40)))
    tail = steps.log_tail(log).split("\n    ")
    assert tail[0] == "line 25"
    assert tail[-1] == "line 39"
    assert steps.log_tail(tmp_path / "missing.log") == "(no log)"


def test_a_failed_step_names_itself_and_shows_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    log = steps.open_log("step")
    script = "for n in $(seq 1 30); do echo out $n; done; echo bad >&2; exit 3"
    with pytest.raises(GpufleetError) as caught:
        steps.run_step("base: debootstrap", [["sh", "-c", script]], log, lambda _: None)
    message = str(caught.value)
    assert message.startswith("image: base: debootstrap failed (sh exited 3)")
    assert str(log) in message
    assert "out 30" in message
    assert "bad" in message
    assert "out 10\n" not in message


def test_a_pipeline_fails_when_its_first_command_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    log = steps.open_log("pipe")
    with pytest.raises(GpufleetError, match=r"failed \(false exited 1\)"):
        steps.run_step("x", [["false"], ["cat"]], log, lambda _: None)


def test_a_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(GpufleetError, match=r"apt-get install -y debootstrap"):
        steps.require_tool("debootstrap")
    with pytest.raises(GpufleetError, match=r"apt-get install -y docker\.io"):
        steps.require_docker()
