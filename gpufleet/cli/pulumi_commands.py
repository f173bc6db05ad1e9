"""inventory: read a Pulumi stack's outputs into the launcher's inventory folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.common import console, load_cli_spec
from gpufleet.environment.lockfile import lock_digest, lock_path
from gpufleet.errors import GpufleetError
from gpufleet.inventory import state_dir, write_state
from gpufleet.pulumi_outputs import inventory_from_outputs, parse_stack_outputs
from gpufleet.spec.loader import find_project_root

PULUMI_TIMEOUT_S = 120
INSTALL_HINT = (
    "the Pulumi CLI is not on PATH: install it (https://www.pulumi.com/docs/install/, e.g. "
    "'curl -fsSL https://get.pulumi.com | sh' or 'brew install pulumi'), run 'pulumi login --local', "
    "then run this again"
)


def read_stack_outputs(stack: str, project_root: Path) -> str:
    """The stack's outputs as JSON text, secrets included, from the Pulumi CLI."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise GpufleetError(INSTALL_HINT)
    command = [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack]
    try:
        done = subprocess.run(
            command,
            cwd=project_root,
            capture_output=True,
            text=True,
            timeout=PULUMI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GpufleetError(f"'pulumi stack output' did not answer in {PULUMI_TIMEOUT_S} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise GpufleetError(f"'pulumi stack output --stack {stack}' failed: {detail}")
    return done.stdout


def inventory(
    stack: Annotated[str, typer.Option("--stack", "-s", help="The Pulumi stack that 'pulumi up' stood up.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="State folder to write (default: .gpufleet/<cluster>/)."),
    ] = None,
) -> None:
    """Write the inventory (hosts, controller key, pinned host keys) from a Pulumi stack's outputs."""
    path, spec = load_cli_spec(stack, None, quiet=True)
    root = find_project_root()
    found, private_key = inventory_from_outputs(parse_stack_outputs(read_stack_outputs(stack, root)))
    if lock_path(path).is_file():  # the lock the image was built from, for run.json
        found = found.model_copy(update={"lock_digest": lock_digest(lock_path(path).read_bytes())})
    if found.cluster != spec.name:
        raise GpufleetError(
            f"stack {stack!r} exports cluster {found.cluster!r} but its spec names {spec.name!r}: "
            "run 'pulumi up' again so the outputs match the spec"
        )
    folder = out or state_dir(root, spec.name)
    write_state(folder, found, private_key)
    console.print(f"wrote the inventory of {len(found.hosts)} hosts to {folder}", highlight=False)
