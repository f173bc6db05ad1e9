"""Findings for people: a Rich table (``gpufleet lint``, ``preflight``) or plain lines (logs)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from gpufleet.lint.findings import Finding

_STYLE = {"error": "bold red", "warning": "yellow"}


def summary(findings: list[Finding]) -> str:
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    if not findings:
        return "lint: no findings"
    return f"lint: {errors} error(s), {warnings} warning(s)"


def finding_lines(findings: list[Finding]) -> list[str]:
    """Three lines per finding: ``severity code [host]: message``, then why and fix."""
    lines = []
    for f in findings:
        where = f" [{f.host}]" if f.host else ""
        lines += [f"{f.severity} {f.code}{where}: {f.message}", f"  why: {f.why}", f"  fix: {f.fix}"]
    return lines


def findings_table(findings: list[Finding], title: str | None = None) -> Table:
    table = Table(title=title, show_lines=True, expand=False)
    for column in ("severity", "code", "host", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(
            Text(f.severity, style=_STYLE[f.severity]),
            f.code,
            f.host or "(all)",
            Text(f"{f.message}\n") + Text(f.why, style="dim"),
            f.fix,
        )
    return table
