"""Run the ``gpufleet`` command in-process, as the console script does."""

from __future__ import annotations

import sys

import pytest

from gpufleet.cli.main import main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr; any exception but SystemExit fails the test (a traceback)."""
    old_argv = sys.argv
    sys.argv = ["gpufleet", *argv]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = old_argv
    out, err = capsys.readouterr()
    return code, out, err
