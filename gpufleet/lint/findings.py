"""One lint finding: what is wrong, on which host, why it matters and how to fix it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["error", "warning"]


class Finding(BaseModel):
    """``host`` is None for a finding about the whole cluster (the spec's container settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity
    code: str
    host: str | None
    message: str
    why: str
    fix: str


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def sort_key(finding: Finding) -> tuple[int, str, str, str]:
    return (0 if finding.severity == "error" else 1, finding.host or "", finding.code, finding.message)
