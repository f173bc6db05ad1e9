"""gpufleet lint: the known NCCL performance killers and hang causes, before launch.

``lint(spec, facts_by_host)`` reads the spec (and the derived container and
NCCL settings) and, when given, each host's probed facts. ``preflight`` runs
the same rules on live facts.
"""

from gpufleet.lint.findings import Finding, Severity, has_errors
from gpufleet.lint.report import finding_lines, findings_table, summary
from gpufleet.lint.rules import lint

__all__ = ["Finding", "Severity", "finding_lines", "findings_table", "has_errors", "lint", "summary"]
