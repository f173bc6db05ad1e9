"""Entry point: builds the Typer app and turns known errors into clean exits."""

from __future__ import annotations

import sys

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
app.command()(spec_commands.validate)
app.command()(spec_commands.render)
app.command()(image_commands.lock)
app.command()(image_commands.build)
app.command()(pulumi_commands.inventory)
app.command()(cluster_commands.up)
app.command()(cluster_commands.down)
app.command()(cluster_commands.ssh)
app.command(name="exec", context_settings=exec_command.EXEC_CONTEXT)(exec_command.exec_)
app.command()(jupyter_command.jupyter)
app.command()(hardware_commands.probe)
app.command()(hardware_commands.lint)
app.command()(launch_commands.preflight)
app.command(context_settings=launch_commands.TRAIN_CONTEXT)(launch_commands.train)
app.command()(launch_commands.logs)
app.command()(launch_commands.status)
app.command()(launch_commands.stop)


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
