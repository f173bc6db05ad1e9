"""``gpufleet lock``: run hostscripts/envlock.py in a throwaway container of the base; the answer is a Lock."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from gpufleet.environment import pip_settings
from gpufleet.environment.docker_client import DockerClient
from gpufleet.environment.lockfile import AptLock, AptPin, Lock, LockedBase, PythonPin
from gpufleet.environment.packages import EnvironmentInputs
from gpufleet.errors import GpufleetError
from gpufleet.hostscripts.envlock import ANSWER_PREFIX

LOCK_TIMEOUT_S = 1200.0


class LockFailed(GpufleetError):
    """The resolver refused (an unknown package, an unsatisfiable version): exit 1, its reason."""


def envlock_source() -> bytes:
    return resources.files("gpufleet.hostscripts").joinpath("envlock.py").read_bytes()


def snapshot_now(now: datetime | None = None) -> str:
    """snapshot.debian.org / snapshot.ubuntu.com timestamp: this day, 00:00 UTC (an existing snapshot)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y%m%dT000000Z")


def lock_request(
    inputs: EnvironmentInputs, previous: Lock | None, upgrade: bool, snapshot: str | None
) -> dict[str, Any]:
    keep = previous is not None and not upgrade
    return {
        "python_packages": list(inputs.python_packages),
        "apt_packages": list(inputs.apt_packages),
        "previous_python": [f"{p.name}=={p.version}" for p in previous.python] if keep and previous else [],
        "snapshot": (previous.apt.snapshot if keep and previous and previous.apt.snapshot else snapshot),
    }


def container_argv(
    docker: DockerClient, base: str, request: dict[str, Any], settings: pip_settings.PipSettings
) -> list[str]:
    mounts = [
        arg for folder in pip_settings.local_folders(settings) for arg in ("-v", f"{folder}:{folder}:ro")
    ]
    env = [
        arg
        for key, value in sorted(pip_settings.container_env(settings).items())
        for arg in ("-e", f"{key}={value}")
    ]
    return docker.argv(
        "run", "--rm", "-i", "--network", "host", "--user", "0", "--entrypoint", "python",
        *mounts, *env, base, "-", json.dumps(request, sort_keys=True),
    )  # fmt: skip


def parse_answer(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(ANSWER_PREFIX):
            answer = json.loads(line[len(ANSWER_PREFIX) :])
            return answer if isinstance(answer, dict) else None
    return None


def lock_from_answer(inputs: EnvironmentInputs, base: LockedBase, answer: dict[str, Any]) -> Lock:
    apt = answer["apt"]
    return Lock(
        inputs=inputs,
        base=base.model_copy(update={"python": answer["python_version"], "os": answer["os"]}),
        python=tuple(
            PythonPin(name=p["name"], version=p["version"], hashes=tuple(p["hashes"]))
            for p in answer["python"]
        ),
        base_python=tuple(answer["base_python"]),
        apt=AptLock(
            archive=apt["archive"],
            snapshot=apt["snapshot"],
            sources=tuple(apt["sources"]),
            packages=tuple(AptPin(name=p["name"], version=p["version"]) for p in apt["packages"]),
        ),
    )


def resolve(
    docker: DockerClient,
    image: str,
    base: LockedBase,
    inputs: EnvironmentInputs,
    previous: Lock | None,
    upgrade: bool,
    snapshot: str | None,
    settings: pip_settings.PipSettings,
    log: Path,
) -> Lock:
    """The lock of ``inputs`` resolved in ``image`` (the base, as docker's daemon knows it)."""
    request = lock_request(inputs, previous, upgrade, snapshot)
    argv = container_argv(docker, image, request, settings)
    try:
        run = subprocess.run(
            argv,
            input=envlock_source(),
            capture_output=True,
            timeout=LOCK_TIMEOUT_S,
            check=False,
            env=docker.environment(),
        )
    except subprocess.TimeoutExpired:
        raise GpufleetError(f"lock: resolving in {base.reference} took over {LOCK_TIMEOUT_S:.0f} s") from None
    stdout, stderr = run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")
    log.write_text(f"$ {' '.join(argv[:-1])} REQUEST\n{stdout}\n{stderr}")
    answer = parse_answer(stdout)
    if answer is None:
        last = _tail(stderr)
        raise GpufleetError(f"lock: the resolver in {base.reference} gave no answer ({last}); log: {log}")
    if "error" in answer:
        error = answer["error"]
        what = "Python packages" if error["stage"] == "python" else "apt packages"
        raise LockFailed(f"lock: {what} cannot be resolved in {base.reference}: {error['message']}")
    return lock_from_answer(inputs, base, answer)


def _tail(text: str, lines: int = 2) -> str:
    kept: Sequence[str] = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " / ".join(kept) or "no output"
