"""The preflight report as people read it: at 80 and 200 columns, no cell or word is broken."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from gpufleet.launcher.preflight import CHECKS, COLUMNS, LEGEND, Check, PreflightReport, Status

MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skipped": "-"}
DETAIL = (
    "cannot connect to node-0's rendezvous port 10.10.0.11:29400 (timed out); a firewall between "
    "the hosts blocks it, or the address is wrong"
)


def report(hosts: list[str]) -> PreflightReport:
    statuses: list[Status] = ["ok", "skipped", "ok", "fail", "warn", "ok", "ok", "skipped", "ok", "fail"]
    results = {}
    for index, host in enumerate(hosts):
        row = {name: Check("ok", "fine") for name in CHECKS}
        if index == 1:
            row = {
                name: Check(status, f"{name} summary", DETAIL if status == "fail" else "")
                for name, status in zip(CHECKS, statuses, strict=True)
            }
        results[host] = row
    return PreflightReport(hosts=hosts, results=results)


def rendered(report: PreflightReport, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(report.table())
    for line in report.details():
        console.print(line, highlight=False, markup=False)
    return console.export_text().splitlines()


def source_words(report: PreflightReport) -> set[str]:
    text = " ".join(
        [
            *report.hosts,
            *CHECKS,
            *COLUMNS.values(),
            *MARKS.values(),
            "preflight",
            "host",
            LEGEND,
            *report.details(),
        ]
    )
    pairs = {f"{name}={mark}" for name in COLUMNS.values() for mark in MARKS.values()}
    return set(text.split()) | pairs | {f"{host}:" for host in report.hosts}


@pytest.mark.parametrize("width", [80, 200], ids=["80-columns", "200-columns"])
def test_one_line_per_host_with_a_mark_per_check(width: int) -> None:
    hosts = ["node-0", "node-1", "gpu-rack-12-slot-007"]  # 20 characters still fit in 80 columns
    lines = rendered(report(hosts), width)
    assert all(len(line) <= width for line in lines)
    header = next(line for line in lines if line.startswith("host"))
    assert header.split() == ["host", *COLUMNS.values()]
    rows: dict[str, list[str]] = {}
    for line in lines:  # the first line that starts with a host name is its row
        if line.split() and line.split()[0] in hosts:
            rows.setdefault(line.split()[0], line.split()[1:])
    assert rows["node-0"] == ["ok"] * len(CHECKS)
    assert rows["node-1"] == ["ok", "-", "ok", "FAIL", "warn", "ok", "ok", "-", "ok", "FAIL"]
    # The marks stand under their check's name.
    for name, mark in zip(CHECKS, rows["node-1"], strict=True):
        row = next(line for line in lines if line.startswith("node-1"))
        column = re.search(rf"(?<=\s){re.escape(COLUMNS[name])}\b", header)
        assert column is not None and row[column.start() :].startswith(mark)


@pytest.mark.parametrize("width", [80, 200], ids=["80-columns", "200-columns"])
def test_failures_and_warnings_are_spelled_out_below_without_a_broken_word(width: int) -> None:
    shown = report(["node-0", "node-1"])
    lines = rendered(shown, width)
    assert all(len(line) <= width for line in lines)
    text = " ".join(lines)
    assert f"node-1 rendezvous: FAIL: {DETAIL}" in " ".join(text.split())
    assert "node-1 clock: WARN: clock summary" in text
    assert "node-1 cuda" not in text  # skipped checks are not failures
    assert set(text.split()) <= source_words(shown), set(text.split()) - source_words(shown)


def test_a_host_name_too_long_for_the_row_gets_a_line_of_its_own() -> None:
    long_name = "gpu-" + "x" * 59
    shown = report(["node-0", long_name])
    lines = rendered(shown, 80)
    assert all(len(line) <= 80 for line in lines)
    at = lines.index(long_name)
    assert lines[at + 1].split() == ["ok", "-", "ok", "FAIL", "warn", "ok", "ok", "-", "ok", "FAIL"]


def test_a_narrow_console_gets_one_paragraph_per_host() -> None:
    shown = report(["node-0", "node-1"])
    lines = rendered(shown, 40)
    assert all(len(line) <= 40 for line in lines)
    text = " ".join(lines)
    assert "node-1: versions=ok cuda=- nas=ok rdzv=FAIL clock=warn" in " ".join(text.split())
    assert set(text.split()) <= source_words(shown)
