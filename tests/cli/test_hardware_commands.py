"""`gpufleet probe`, `lint` and `render --facts` as a user runs them: output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpufleet.probe import probe
from tests.cli.run import run_main
from tests.recorded import HOSTS_DIR, raw_facts


def facts_dir(tmp_path: Path, hosts: dict[str, str]) -> Path:
    folder = tmp_path / "facts"
    folder.mkdir()
    for host, recorded in hosts.items():
        (folder / f"{host}.json").write_text(json.dumps(raw_facts(recorded)))
    return folder


def test_probe_root_prints_the_facts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["probe", "--root", str(HOSTS_DIR / "dgx-h100-0")], capsys)
    assert code == 0
    assert json.loads(out) == probe(HOSTS_DIR / "dgx-h100-0")


def test_probe_missing_root_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["probe", "--root", str(tmp_path / "nope")], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("error: --root") and "no such directory" in err


def test_lint_clean_spec_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["lint", "--stack", "example-roce"], capsys)
    assert (code, out.strip()) == (0, "lint: no findings")


def test_lint_with_facts_exits_1_on_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = facts_dir(tmp_path, {"vm-0": "cloud-vm", "vm-1": "cloud-vm"})
    code, out, _ = run_main(["lint", "--stack", "example-ethernet", "--facts", str(folder)], capsys)
    assert code == 1
    assert "shm-small" in out and "memlock-limited" in out
    # vm-1 borrows vm-0's recording, so its address is on no interface: a derivation warning.
    assert "nccl-derivation" in out
    assert "lint: 2 error(s), 3 warning(s)" in out


def test_lint_with_missing_facts_names_the_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = facts_dir(tmp_path, {"roce-a": "roce-a"})
    code, _, err = run_main(["lint", "--stack", "example-roce", "--facts", str(folder)], capsys)
    assert code == 2
    assert "no facts for host(s) roce-b" in err


def test_render_with_facts_writes_the_derived_nccl_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = facts_dir(tmp_path, {"roce-a": "roce-a", "roce-b": "roce-b"})
    out_dir = tmp_path / "out"
    code, _, err = run_main(
        ["render", "--stack", "example-roce", "--facts", str(folder), "-o", str(out_dir)], capsys
    )
    assert code == 0
    assert err.startswith("warning: ") and "no Pulumi.example-roce.lock" in err  # cannot be resolved here
    text = (out_dir / "hosts" / "roce-a" / "nccl.env").read_text()
    assert "NCCL_IB_HCA==mlx5_0:1,mlx5_1:1\n" in text
    assert "NCCL_IB_GID_INDEX=3\n" in text
    assert "# RoCE v2 GID index 3 pinned: NCCL 2.18.6 does not select it itself\n" in text
    compose = (out_dir / "hosts" / "roce-a" / "docker-compose.yml").read_text()
    assert "- nccl.env" in compose


def test_render_with_contradicting_facts_fails_naming_the_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = facts_dir(tmp_path, {"roce-a": "roce-a", "roce-b": "cloud-vm"})
    code, _, err = run_main(
        ["render", "--stack", "example-roce", "--facts", str(folder), "-o", str(tmp_path / "out")], capsys
    )
    assert code == 2
    assert err.startswith("error: host roce-b: network.fabric is roce")
    assert not (tmp_path / "out").exists()
