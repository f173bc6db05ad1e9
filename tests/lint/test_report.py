"""gpufleet/lint/report.py: findings as lines and as a Rich table."""

from __future__ import annotations

from rich.console import Console

from gpufleet.lint import Finding, finding_lines, findings_table, summary

ERROR = Finding(
    severity="error",
    code="shm-small",
    host="gpu-1",
    message="/dev/shm is 64 MiB",
    why="NCCL needs it",
    fix="--shm-size=16g",
)
WARNING = Finding(
    severity="warning", code="nccl-debug", host=None, message="NCCL_DEBUG=INFO", why="slow", fix="remove it"
)


def test_lines() -> None:
    assert finding_lines([ERROR, WARNING]) == [
        "error shm-small [gpu-1]: /dev/shm is 64 MiB",
        "  why: NCCL needs it",
        "  fix: --shm-size=16g",
        "warning nccl-debug: NCCL_DEBUG=INFO",
        "  why: slow",
        "  fix: remove it",
    ]


def test_summary() -> None:
    assert summary([]) == "lint: no findings"
    assert summary([ERROR, WARNING, WARNING]) == "lint: 1 error(s), 2 warning(s)"


def test_table_shows_every_column() -> None:
    console = Console(record=True, width=200)
    console.print(findings_table([ERROR, WARNING]))
    text = console.export_text()
    for part in (
        "shm-small",
        "gpu-1",
        "/dev/shm is 64 MiB",
        "NCCL needs it",
        "--shm-size=16g",
        "(all)",
        "nccl-debug",
    ):
        assert part in text
