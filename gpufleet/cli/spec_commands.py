"""validate and render: the spec's own commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.common import (
    FileOption,
    StackOption,
    console,
    load_cli_lock,
    load_cli_spec,
    warn,
)
from gpufleet.cli.hardware_commands import FactsOption, facts_nccl_envs
from gpufleet.environment.lockfile import lock_path
from gpufleet.environment.stack_lock import lock_command
from gpufleet.render import render_cluster, write_tree


def validate(stack: StackOption = None, file: FileOption = None) -> None:
    """Check a cluster spec. Exit 0 when valid (warnings on stderr), 2 when not."""
    path, spec = load_cli_spec(stack, file)
    load_cli_lock(path, spec)
    console.print(
        f"{path}: cluster '{spec.name}' is valid ({len(spec.hosts)} hosts, "
        f"{sum(h.gpus for h in spec.hosts)} GPUs, fabric {spec.network.fabric})",
        highlight=False,
    )


def render(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the files into.")],
    stack: StackOption = None,
    file: FileOption = None,
    facts: FactsOption = None,
) -> None:
    """Write the cluster's files: the image's build context (Dockerfile, entrypoint.sh,
    gpufleet-env/ from the stack's lock), hostfile, and per host sshd_config, authorized_keys,
    nftables.conf, nccl.env, docker-compose.yml.

    With --facts DIR, each host's nccl.env is derived from DIR/<host>.json (gpufleet probe)."""
    path, spec = load_cli_spec(stack, file)
    lock = load_cli_lock(path, spec, quiet=True)
    tree = render_cluster(spec, facts_nccl_envs(spec, facts), lock=lock, lock_name=lock_path(path).name)
    if lock is None and spec.runs_image:
        warn(f"{path}: no {lock_path(path).name}: the image's files (Dockerfile, gpufleet-env/) are not "
             f"written, since nothing in the image is installed unpinned; run `{lock_command(path)}`")  # fmt: skip
    written = write_tree(tree, out)
    console.print(f"wrote {len(written)} files for {len(spec.hosts)} hosts under {out}")
