"""A matrix's reports, from its cells' results: JUnit (a testsuite per cell and a kernel-health
testcase), KTAP (one document per cell and a nested one for the matrix), the terminal table,
Markdown, a self-contained HTML page and matrix.json."""

from __future__ import annotations

import html
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import coverage as coverage_of
from . import junit, ktap, page
from .cells import CellResult
from .outcome import Outcome, TestResult


def write(results: list[CellResult], out: Path, regressions: list[str] | None = None, *,
          coverage: dict[str, Any] | None = None) -> None:
    """junit.xml, one KTAP per cell, summary.txt, summary.md, report.html and matrix.json;
    ``coverage``: the coverage cells' section (gmemtest.workflows.matrix.coverage_of)."""
    notes = coverage_of.group_notes(coverage or {})
    out.mkdir(parents=True, exist_ok=True)
    _write_junit(results, out / "junit.xml")
    for r in results:
        (out / f"{r.slug}.ktap").write_text(
            ktap.document(_tests(r), [str(f) for f in r.outcome.findings] if r.outcome else []))
    (out / "matrix.ktap").write_text(ktap.nested(
        (r.id, _tests(r), [str(f) for f in r.outcome.findings] if r.outcome else [],
         _verdict(r)) for r in results))
    doc = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cells": {r.id: r.summary() for r in results},
           "coverage": coverage or {},
           "regressions": regressions or []}
    (out / "matrix.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "summary.txt").write_text(table(results, regressions, notes) + "\n")
    (out / "summary.md").write_text(markdown(results, regressions, notes))
    (out / "report.html").write_text(html_page(results, regressions, notes))


def _tests(r: CellResult) -> list[TestResult]:
    return r.outcome.results if r.outcome else []


def _verdict(r: CellResult) -> TestResult:
    """The cell as a test of its own: passed, failed (a test or the kernel's health) or an
    error (it did not build, boot or report)."""
    if r.ok:
        return TestResult(r.id, Outcome.PASSED)
    problem = r.outcome is None or r.outcome.problem
    return TestResult(r.id, Outcome.ERROR if problem else Outcome.FAILED, r.verdict())


def _write_junit(results: list[CellResult], path: Path) -> None:
    suites = []
    for r in results:
        cell_junit = path.parent / "cells" / r.slug / "junit.xml"
        cases: list[junit.Case | ET.Element] = list(
            ET.parse(cell_junit).getroot().iter("testcase")) \
            if r.outcome is not None and cell_junit.exists() else []
        health = junit.Case("gmemtest", "kernel-health")
        if not r.ok and (r.outcome is None or r.outcome.problem or r.outcome.findings):
            problem = r.outcome is None or r.outcome.problem
            health = junit.Case("gmemtest", "kernel-health",
                                error=r.verdict() if problem else None,
                                failure=None if problem else r.verdict(),
                                text="\n".join(str(f) for f in r.outcome.findings)
                                if r.outcome else "")
        suites.append(junit.suite(r.id, [*cases, health]))
    junit.write("gmemtest matrix", suites, path)


COLUMNS = ("cell", "kernel tests run", "passed", "failed", "skipped", "xfailed", "health",
           "verdict")


def _rows(results: list[CellResult]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in results:
        o = r.outcome
        counts = (o.kernel_ran, o.passed, o.failed, o.skipped, o.xfailed) if o else (0,) * 5
        rows.append((r.id, *map(str, counts), str(len(o.findings)) if o else "-",
                     "PASS" if r.ok else r.verdict()))
    return rows


def table(results: list[CellResult], regressions: list[str] | None = None,
          notes: list[str] | None = None) -> str:
    """The terminal table."""
    lines = page.text_table(COLUMNS, _rows(results), last_free=True, numbers=True)
    lines += notes or []
    lines += [f"regression: {x}" for x in regressions or []]
    return "\n".join(lines)


def markdown(results: list[CellResult], regressions: list[str] | None = None,
             notes: list[str] | None = None) -> str:
    lines = ["# gmemtest matrix", "", *page.markdown_table(COLUMNS, _rows(results))]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    for r in results:
        if r.outcome and r.outcome.findings:
            lines += ["", f"## {r.id}: kernel health", ""]
            lines += [f"- `{f}`" for f in r.outcome.findings]
    if regressions:
        lines += ["", "## Regressions against the baseline", ""]
        lines += [f"- {x}" for x in regressions]
    return "\n".join(lines) + "\n"


def html_page(results: list[CellResult], regressions: list[str] | None = None,
              notes: list[str] | None = None) -> str:
    """One self-contained page: the table, then per cell its findings, failures and skips."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in (*COLUMNS, "logs"))
    body = []
    for r, row in zip(results, _rows(results), strict=True):
        cells = [f"<td><a href='#{e(r.slug)}'>{e(row[0])}</a></td>"]
        cells += [f"<td class='{'n0' if v == '0' else ''}'>{e(v)}</td>" for v in row[1:-1]]
        cells.append(f"<td class='verdict'>{e(row[-1])}</td>")
        links = [f"<a href='{e(r.ktap)}'>ktap</a>"]
        if r.console:
            links.insert(0, f"<a href='{e(r.console)}'>console</a>")
        cells.append(f"<td>{' '.join(links)}</td>")
        body.append(f"<tr class='{'pass' if r.ok else 'fail'}'>{''.join(cells)}</tr>")
    parts = [f"<p>{len(results)} cells</p>"]
    if regressions:
        parts.append("<div class='regr'><b>Regressions against the baseline</b><ul>"
                     + "".join(f"<li>{e(x)}</li>" for x in regressions) + "</ul></div>")
    parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    parts += [f"<p>{e(n)}</p>" for n in notes or []]
    for r in results:
        parts.append(f"<h2 id='{e(r.slug)}'>{e(r.id)}</h2><p>{e(r.verdict())}</p>")
        if r.kernel:
            cmdline = " ".join(r.cmdline) or "(nothing: the defaults)"
            accel = r.outcome.run.accel if r.outcome and r.outcome.run else ""
            parts.append(f"<p>kernel {e(r.kernel)}, command line <code>{e(cmdline)}</code>, "
                         f"{e(accel)}</p>")
        o = r.outcome
        if o is None:
            continue
        if o.findings:
            parts.append("<h3>Kernel health</h3><pre>"
                         + e("\n".join(str(f) for f in o.findings)) + "</pre>")
        if o.failures:
            parts.append("<h3>Failed</h3><ul>"
                         + "".join(f"<li>{e(n)}<br><code>{e(why)}</code></li>"
                                   for n, why in o.failures.items()) + "</ul>")
        if o.skip_reasons:
            items = "".join(f"<li>{n} &times; {e(reason)}</li>"
                            for reason, n in o.skip_reasons.most_common())
            parts.append(f"<details><summary>{o.skipped} skipped</summary><ul>{items}</ul>"
                         "</details>")
    return page.html_page("gmemtest matrix", "\n".join(parts))
