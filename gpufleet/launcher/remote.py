"""Shell command lines for hosts: every value quoted, the agent shipped inline.

Fabric's ``inline_ssh_env`` does no shell escaping, so environment values never
go through it: commands are built here with ``shlex.quote`` on every word.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def shell_command(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """``[cd DIR &&] env K=V ... ARGV`` with every part quoted for a POSIX shell."""
    words: list[str] = []
    if env:
        words.append("env")
        for key, value in env.items():
            if not key or key[0].isdigit() or not set(key) <= _ENV_NAME_CHARS:
                raise ValueError(f"{key!r} is not an environment variable name")
            words.append(f"{key}={shlex.quote(value)}")
    words.extend(shlex.quote(word) for word in argv)
    command = " ".join(words)
    return f"cd {shlex.quote(cwd)} && {command}" if cwd else command


@cache
def agent_source() -> str:
    from gpufleet.hostscripts import agent

    return Path(agent.__file__).read_text()


def agent_payload(source: str) -> str:
    """What ``python -c`` runs: the agent, knowing its own source (it re-runs itself detached)."""
    return f"SOURCE = {source!r}\nexec(compile(SOURCE, 'gpufleet-agent', 'exec'))\n"


def agent_command(python: str, *args: str) -> str:
    """``<python> -c <agent> ARGS...``, quoted: one helper process on the host, no files needed."""
    return shell_command([python, "-c", agent_payload(agent_source()), *args])
