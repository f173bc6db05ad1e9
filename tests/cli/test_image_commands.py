"""`gpufleet lock` and `build` as a user runs them, on a copy of the local stack (root: the image cache)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import STACKS_DIR, needs_root

GPUFLEET = Path(sys.executable).parent / "gpufleet"
pytestmark = [needs_root("debootstrap", "dockerd"), pytest.mark.slow, pytest.mark.timeout(1500)]


def gpufleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GPUFLEET), *args], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )


def test_lock_build_and_a_stale_lock_as_a_user_meets_them(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: lock-test\nruntime: python\nstackConfigDir: stacks\n")
    (tmp_path / "stacks").mkdir()
    stack = tmp_path / "stacks" / "Pulumi.local.yaml"
    shutil.copy(STACKS_DIR / "Pulumi.local.yaml", stack)

    made = gpufleet("lock", "--stack", "local", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    lock = tmp_path / "stacks" / "Pulumi.local.lock"
    assert made.stdout.startswith(f"{lock}: ") and "Python and" in made.stdout
    first = lock.read_bytes()
    assert gpufleet("lock", "--stack", "local", cwd=tmp_path).returncode == 0
    assert lock.read_bytes() == first, "re-locking the same inputs rewrote the pins"

    built = gpufleet("build", "--stack", "local", cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    lines = built.stdout.splitlines()
    assert re.fullmatch(r"image sha256:[0-9a-f]{64}", lines[0]) and re.fullmatch(
        r"manifest sha256:[0-9a-f]{64}", lines[1]
    )

    rendered = gpufleet("render", "--stack", "local", "--out", "out", cwd=tmp_path)
    assert rendered.returncode == 0 and "warning" not in rendered.stderr
    assert (tmp_path / "out" / "gpufleet-env" / "requirements.lock").read_text().count("--hash=sha256:") >= 97

    config = yaml.safe_load(stack.read_text())
    config["config"]["gpufleet:cluster"]["image"]["python_packages"] = ["six"]
    stack.write_text(yaml.safe_dump(config))
    for command in (["validate"], ["render", "--out", "out2"], ["build"]):
        stale = gpufleet(*command, "--stack", "local", cwd=tmp_path)
        assert stale.returncode == 2, (command, stale.stderr)
        assert stale.stderr.strip().splitlines()[-1] == (
            "error: Pulumi.local.lock is out of date (python packages changed (+six)): "
            "run `gpufleet lock --stack local`"
        )
    assert lock.read_bytes() == first, "a stale lock is refused, never rewritten"
