"""The lock next to a stack file: found, checked against the spec, made when missing (never rewritten silently)."""

from __future__ import annotations

import re
from pathlib import Path

from gpufleet.environment.lockfile import Lock, lock_path, lock_problem, read_lock
from gpufleet.environment.packages import environment_inputs
from gpufleet.errors import InputError
from gpufleet.spec.models import ClusterSpec

_STACK_FILE_RE = re.compile(r"^Pulumi\.(?P<stack>[^/]+)\.yaml$")


def lock_command(stack_file: Path) -> str:
    """``gpufleet lock --stack NAME`` for ``Pulumi.NAME.yaml``, else ``gpufleet lock -f FILE``."""
    match = _STACK_FILE_RE.match(stack_file.name)
    return f"gpufleet lock --stack {match['stack']}" if match else f"gpufleet lock -f {stack_file}"


def current_lock(stack_file: Path, spec: ClusterSpec) -> Lock | None:
    """The stack's lock when it is the lock of this spec; None when there is none; InputError when stale."""
    path = lock_path(stack_file)
    lock = read_lock(path)
    if lock is None:
        return None
    problem = lock_problem(lock, environment_inputs(spec))
    if problem is not None:
        raise InputError(f"{path.name} is out of date ({problem}): run `{lock_command(stack_file)}`")
    return lock


def missing_lock_warning(stack_file: Path) -> str:
    return (
        f"no {lock_path(stack_file).name} yet: the image's packages are not pinned; "
        f"run `{lock_command(stack_file)}` (the first build or up makes it) and commit it"
    )
