"""probe and lint: what a host has, and what would make NCCL slow or hang on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.cli.common import FileOption, StackOption, console, load_cli_spec, warn
from gpufleet.derive.nccl import NcclEnv, nccl_env
from gpufleet.errors import InputError
from gpufleet.facts import HostFacts, load_facts_dir
from gpufleet.lint import findings_table, has_errors, summary
from gpufleet.lint import lint as lint_spec
from gpufleet.probe import probe as probe_host
from gpufleet.spec import ClusterSpec

FactsOption = Annotated[
    Path | None,
    typer.Option("--facts", help="Folder of <host>.json files from 'gpufleet probe' (one per host)."),
]


def probe(
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Read a recorded host from DIR (DIR/sys, DIR/ip-addr.json, ...)."),
    ] = None,
    no_import_torch: Annotated[
        bool,
        typer.Option("--no-import-torch", help="Versions from installed wheels only (skips a ~3 s import)."),
    ] = False,
) -> None:
    """Print this host's facts as JSON: interfaces, RDMA ports and GIDs, GPUs, limits, versions.

    Save one file per host (gpufleet probe > facts/<host>.json) for render/lint --facts.
    """
    if root is not None and not root.is_dir():
        raise InputError(f"--root {root}: no such directory")
    typer.echo(json.dumps(probe_host(root, import_torch=not no_import_torch), indent=2, sort_keys=True))


def facts_for(folder: Path | None, host_names: list[str]) -> dict[str, HostFacts] | None:
    return None if folder is None else load_facts_dir(folder, host_names)


def facts_nccl_envs(spec: ClusterSpec, folder: Path | None) -> dict[str, NcclEnv] | None:
    """Per-host NCCL envs from DIR/<host>.json (warnings to stderr); None without a folder."""
    facts = facts_for(folder, [h.name for h in spec.hosts])
    if facts is None:
        return None
    envs = {h.name: nccl_env(spec, h, facts[h.name]) for h in spec.hosts}
    for name, env in envs.items():
        for message in env.warnings:
            warn(f"{name}: {message}")
    return envs


def lint(stack: StackOption = None, file: FileOption = None, facts: FactsOption = None) -> None:
    """Check for NCCL performance killers and hang causes. Exit 1 if any error.

    Without --facts only the spec is checked; with it, each host's probed facts too.
    """
    _, spec = load_cli_spec(stack, file)
    findings = lint_spec(spec, facts_for(facts, [h.name for h in spec.hosts]))
    if findings:
        console.print(findings_table(findings))
    console.print(summary(findings), highlight=False)
    if has_errors(findings):
        raise typer.Exit(1)
