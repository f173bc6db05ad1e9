"""gpufleet inventory: the real CLI, with a stand-in for the Pulumi CLI (which cannot be installed here)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from components.testing import run_program
from gpufleet.inventory import load_inventory
from gpufleet.spec.loader import read_stack_config
from tests.conftest import PROJECT_ROOT, STACKS_DIR


def _gpufleet(*args: str, path: str) -> subprocess.CompletedProcess[str]:
    code = "from gpufleet.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "inventory", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_pulumi(folder: Path, stdout: str, exit_code: int = 0) -> Path:
    """A 'pulumi' that records its arguments and prints the given outputs."""
    folder.mkdir()
    (folder / "outputs.json").write_text(stdout)
    script = folder / "pulumi"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{folder}/argv"\n'
        f'cat "{folder}/outputs.json"\n'
        f'[ {exit_code} -eq 0 ] || echo "error: no stack named prod" >&2\n'
        f"exit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.fixture(scope="module")
def stack_outputs() -> str:
    run = run_program(read_stack_config(STACKS_DIR / "Pulumi.example-roce.yaml"), stack="example-roce")
    return json.dumps(run.exports)


@pytest.mark.timeout(120)
def test_writes_the_inventory_from_the_stack_outputs(tmp_path: Path, stack_outputs: str) -> None:
    fake = _fake_pulumi(tmp_path / "bin", stack_outputs)
    out = tmp_path / "state"
    done = _gpufleet("--stack", "example-roce", "--out", str(out), path=f"{fake}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert (fake / "argv").read_text().split() == [
        "stack",
        "output",
        "--json",
        "--show-secrets",
        "--stack",
        "example-roce",
    ]
    inventory = load_inventory(out)
    assert [h.name for h in inventory.hosts] == ["roce-a", "roce-b"]
    assert (out / "id_ed25519").read_text() == json.loads(stack_outputs)["controller_private_key"]
    assert stat.S_IMODE((out / "id_ed25519").stat().st_mode) == 0o600
    assert (out / "known_hosts").read_text().splitlines() == [h.known_hosts_line() for h in inventory.hosts]


@pytest.mark.timeout(120)
def test_without_the_pulumi_cli_it_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _gpufleet("--stack", "example-roce", "--out", str(tmp_path / "s"), path=str(empty))
    assert done.returncode == 1
    assert "the Pulumi CLI is not on PATH: install it" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.timeout(120)
def test_pulumi_failure_is_reported_cleanly(tmp_path: Path) -> None:
    fake = _fake_pulumi(tmp_path / "bin", "", exit_code=255)
    done = _gpufleet("--stack", "example-roce", "--out", str(tmp_path / "s"), path=f"{fake}:/usr/bin:/bin")
    assert done.returncode == 1
    assert "failed: error: no stack named prod" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_outputs_of_another_cluster_are_refused(tmp_path: Path, stack_outputs: str) -> None:
    fake = _fake_pulumi(tmp_path / "bin", stack_outputs)
    done = _gpufleet("--stack", "example-ib", "--out", str(tmp_path / "s"), path=f"{fake}:/usr/bin:/bin")
    assert done.returncode == 1
    assert "exports cluster 'chatbot-roce' but its spec names 'chatbot-ib'" in done.stderr


@pytest.mark.timeout(120)
def test_unknown_stack_is_a_clean_error(tmp_path: Path) -> None:
    done = _gpufleet("--stack", "nope", path="/usr/bin:/bin")
    assert done.returncode == 2 and "no stack 'nope'" in done.stderr
