"""Errors a user can act on. The CLI prints them without a traceback.

Exit codes, the same for every command: 0 success; 1 the operation failed (a
host, a run, a check); 2 bad input or usage (a spec, a file, an argument).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

SHOWN_CHARS = 60
MAX_ISSUE_CHARS = 600
MAX_ISSUES_SHOWN = 20


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, shortened: a 5 MB value is not echoed back whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[: max(limit - 1, 1)]}…{size}"


def _capped(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text):,} characters in all)"


class GpufleetError(Exception):
    """A failure with a message that says what is wrong and what to do.

    ``exit_code`` is what the CLI exits with: 1, an operation or a check failed.
    """

    exit_code = EXIT_FAILED


class InputError(GpufleetError):
    """Bad input or usage: a file that cannot be read, an argument that names nothing (exit 2)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec, located by its field path (``hosts[1].address``)."""

    path: str
    message: str

    def format(self, source: str) -> str:
        where = f"cluster.{self.path}" if self.path else "cluster"
        return _capped(f"{source}: {where}: {self.message}", MAX_ISSUE_CHARS)


class SpecError(InputError):
    """The spec is invalid. Carries every issue found, not just the first."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(self.lines()))

    def lines(self, limit: int = MAX_ISSUES_SHOWN) -> list[str]:
        """One line per issue, at most ``limit`` of them (a screenful), then how many more."""
        lines = [issue.format(self.source) for issue in self.issues[:limit]]
        rest = len(self.issues) - limit
        if rest > 0:
            lines.append(
                f"{self.source}: cluster: and {rest:,} more problems (fix these first, then validate again)"
            )
        return lines
