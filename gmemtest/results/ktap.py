"""KTAP v1 (Documentation/dev-tools/ktap.rst), the kernel's test result format: a document per
run with a test line per test, directives for skips, expected failures, timeouts and errors,
diagnostic lines for failures and kernel health findings, and a nested document for a matrix
(each cell a subtest)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from .outcome import Outcome, TestResult

DIRECTIVES = {Outcome.SKIPPED: "SKIP", Outcome.XFAILED: "XFAIL", Outcome.TIMEOUT: "TIMEOUT",
              Outcome.ERROR: "ERROR"}


def _name(test: str) -> str:
    """A test name as KTAP allows it: no '#' and no white space."""
    return re.sub(r"[#\s]+", "_", test)


def _diagnostics(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line.rstrip()}" for line in text.splitlines() if line.strip()]


def test_line(n: int, result: TestResult, indent: str = "") -> list[str]:
    """The result line of test ``n`` and, for a failure, its message as diagnostic lines."""
    ok = "ok" if result.outcome.ok else "not ok"
    line = f"{indent}{ok} {n} {_name(result.name)}"
    directive = DIRECTIVES.get(result.outcome)
    if directive:
        reason = " ".join(result.message.split())
        line += f" # {directive}" + (f" {reason}" if reason else "")
    lines = [line]
    if result.outcome in (Outcome.FAILED, Outcome.TIMEOUT, Outcome.ERROR) and result.message:
        lines = _diagnostics(result.message, indent) + lines
    return lines


def document(results: Iterable[TestResult], findings: Iterable[str] = (), *,
             indent: str = "", subtest: str | None = None,
             header: dict[str, str] | None = None) -> str:
    """A KTAP document: ``header`` as diagnostic lines (what was tested), the plan, each
    test's line (failures preceded by their message as diagnostics), then each kernel health
    finding as a diagnostic line."""
    results = list(results)
    lines = [f"{indent}KTAP version 1"]
    if subtest is not None:
        lines.append(f"{indent}# Subtest: {_name(subtest)}")
    lines += [f"{indent}# {k}: {v}" for k, v in (header or {}).items()]
    lines.append(f"{indent}1..{len(results)}")
    for n, r in enumerate(results, 1):
        lines += test_line(n, r, indent)
    lines += [f"{indent}# kernel: {f}" for f in findings]
    return "\n".join(lines) + "\n"


def nested(cells: Iterable[tuple[str, list[TestResult], list[str], TestResult]]) -> str:
    """A matrix as one document: per cell (name, its tests, its kernel findings, its verdict
    as a result) a subtest holding the cell's document, then the cell's own line."""
    cells = list(cells)
    lines = ["KTAP version 1", f"1..{len(cells)}"]
    for n, (name, tests, findings, verdict) in enumerate(cells, 1):
        lines.append(document(tests, findings, indent="    ", subtest=name).rstrip("\n"))
        lines += test_line(n, verdict)
    return "\n".join(lines) + "\n"
