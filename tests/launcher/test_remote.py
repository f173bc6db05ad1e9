"""Remote command lines: every word and env value survives a real POSIX shell unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpufleet.hostscripts import agent
from gpufleet.launcher.remote import agent_command, agent_payload, agent_source, shell_command

HOSTILE = [
    pytest.param("plain", id="plain"),
    pytest.param("two words", id="space"),
    pytest.param("$(touch /tmp/gpufleet-pwned)", id="command-substitution"),
    pytest.param("`id`; rm -rf /nonexistent", id="backticks-and-semicolon"),
    pytest.param('it\'s "quoted"', id="quotes"),
    pytest.param("line1\nline2", id="newline"),
    pytest.param("=^docker,lo", id="nccl-style"),
]

ECHO = "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'v': os.environ.get('V')}))"


@pytest.mark.parametrize("value", HOSTILE)
def test_env_values_and_argv_reach_the_program_verbatim(value: str) -> None:
    command = shell_command([sys.executable, "-c", ECHO, value], env={"V": value})
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"argv": [value], "v": value}


def test_cwd_is_quoted_too(tmp_path: object) -> None:
    command = shell_command(["pwd"], cwd="/tmp/a b")
    assert command.startswith("cd '/tmp/a b' && ")


@pytest.mark.parametrize(
    "name",
    [pytest.param("A;B", id="semicolon"), pytest.param("1A", id="digit-first"), pytest.param("", id="empty")],
)
def test_bad_env_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not an environment variable name"):
        shell_command(["true"], env={name: "x"})


def test_the_agent_rebuilds_the_same_payload_it_was_sent_with() -> None:
    # The agent must be self-contained, so it carries its own copy of agent_payload.
    assert agent._payload(agent_source()) == agent_payload(agent_source())


def test_agent_command_runs_in_a_shell(tmp_path: object) -> None:
    out = subprocess.run(
        ["sh", "-c", agent_command(sys.executable, "runs", "/nonexistent-gpufleet-runs")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == {"runs": []}
