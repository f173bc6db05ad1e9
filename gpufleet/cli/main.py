"""Entry point: builds the Typer app and turns known errors into clean exits."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import typer

from gpufleet.cli import (
    cluster_commands,
    exec_command,
    hardware_commands,
    image_commands,
    jupyter_command,
    launch_commands,
    pulumi_commands,
    spec_commands,
)
from gpufleet.cli.common import err_console
from gpufleet.errors import GpufleetError, SpecError

app = typer.Typer(
    name="gpufleet",
    help="Declare a GPU training cluster once; render it, stand it up, train on it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _command(function: Callable[..., Any], **options: Any) -> None:
    """Register ``function``; its summary in ``gpufleet --help`` is its docstring's first paragraph as
    one line (the docstring's own line breaks are for the source, not the screen)."""
    first = (inspect.getdoc(function) or "").split("\n\n")[0]
    app.command(short_help=" ".join(first.split()), **options)(function)


_command(spec_commands.validate)
_command(spec_commands.render)
_command(image_commands.lock)
_command(image_commands.build)
_command(pulumi_commands.inventory)
_command(cluster_commands.up)
_command(cluster_commands.down)
_command(cluster_commands.ssh)
_command(exec_command.exec_, name="exec", context_settings=exec_command.EXEC_CONTEXT)
_command(jupyter_command.jupyter)
_command(hardware_commands.probe)
_command(hardware_commands.lint)
_command(launch_commands.preflight)
_command(launch_commands.train, context_settings=launch_commands.TRAIN_CONTEXT)
_command(launch_commands.logs)
_command(launch_commands.status)
_command(launch_commands.stop)


def main() -> None:
    try:
        app()
    except SpecError as error:
        for line in error.lines():
            err_console.print(line, highlight=False, markup=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except GpufleetError as error:
        err_console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
