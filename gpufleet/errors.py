"""Errors a user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class GpufleetError(Exception):
    """A failure with a message that says what is wrong and what to do.

    ``exit_code`` is what the CLI exits with (2: bad input, 1: a check or an
    operation failed).
    """

    exit_code = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, located by its field path (``hosts[1].address``)."""

    path: str
    message: str

    def format(self, source: str) -> str:
        where = f"cluster.{self.path}" if self.path else "cluster"
        return f"{source}: {where}: {self.message}"


class SpecError(GpufleetError):
    """The spec is invalid. Carries every issue found, not just the first."""

    exit_code = 2

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(issue.format(source) for issue in issues))
