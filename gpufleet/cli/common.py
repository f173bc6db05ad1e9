"""What every subcommand shares: stack selection, the consoles, spec loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gpufleet.environment.lockfile import Lock
from gpufleet.environment.stack_lock import current_lock, missing_lock_warning
from gpufleet.spec import ClusterSpec, load_spec, resolve_stack_file, spec_warnings

# soft_wrap: a sentence stays one line in a pipe or a CI log (grep finds it); tables still fit the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

StackOption = Annotated[
    str | None,
    typer.Option("--stack", "-s", help="Stack name: stacks/Pulumi.<NAME>.yaml next to Pulumi.yaml."),
]
FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="A stack file (or a bare spec file) to read instead."),
]


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def load_cli_spec(stack: str | None, file: Path | None, quiet: bool = False) -> tuple[Path, ClusterSpec]:
    """Resolve and validate the spec; warnings go to stderr. Raises SpecError (exit 2)."""
    path = resolve_stack_file(stack, file)
    spec = load_spec(path)
    if not quiet:
        for message in spec_warnings(spec):
            warn(f"{path}: {message}")
    return path, spec


def load_cli_lock(path: Path, spec: ClusterSpec, quiet: bool = False) -> Lock | None:
    """The stack's lock when it fits the spec; None (warned) when there is none; InputError when stale."""
    if not spec.runs_image:
        return None
    lock = current_lock(path, spec)
    if lock is None and not quiet:
        warn(f"{path}: {missing_lock_warning(path)}")
    return lock
