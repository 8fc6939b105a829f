"""Two kernels' boots compared test for test (`gmemtest diff`): the differences, held as the
test results they are, and their reports (terminal, Markdown, HTML)."""

from __future__ import annotations

import html
from dataclasses import dataclass

from . import coverage, page
from .coverage import Coverage
from .outcome import Outcome, TestResult, short
from .patches import Patch
from .report import BootReport

HEALTH = "(kernel health)"  # the boots' kernel health, compared as a test of its own


@dataclass(frozen=True)
class Difference:
    """A test whose outcome differs between the sides in ``mode``: each side's result (None:
    the side has no such test). For :data:`HEALTH`, a side without findings has passed."""

    mode: str
    test: str
    a: TestResult | None
    b: TestResult | None

    def said(self, r: TestResult | None) -> str:
        """A side's result in words: its outcome and, when it did not pass, why."""
        if r is None:
            return "absent"
        if self.test == HEALTH:
            return "no finding" if r.outcome is Outcome.PASSED else r.message
        return str(r.outcome) + (f": {short(r.message)}" if r.message and
                                 r.outcome is not Outcome.PASSED else "")

    def as_json(self) -> dict[str, str]:
        return {"mode": self.mode, "test": self.test, "a": self.said(self.a),
                "b": self.said(self.b)}


@dataclass(frozen=True)
class Side:
    """One side as the reports name it: A or B, what the user named, the kernel's label and
    its boots."""

    name: str
    spec: str
    label: str
    reports: list[BootReport]


def _health(r: BootReport) -> TestResult:
    findings = "; ".join(str(f) for f in r.findings)
    return TestResult(HEALTH, Outcome.FAILED if findings else Outcome.PASSED, findings)


def differences(a: list[BootReport], b: list[BootReport]) -> list[Difference]:
    """Every (mode, test) whose outcome differs, matching boots by mode (a kernel without the
    switch has one boot, compared with each of the other's)."""
    out = []
    for ra, rb in _pairs(a, b):
        mode = ra.label if ra.label == rb.label else f"{ra.label} / {rb.label}"
        ta = {r.name: r for r in ra.results}
        tb = {r.name: r for r in rb.results}
        for test in sorted(set(ta) | set(tb)):
            x, y = ta.get(test), tb.get(test)
            if x is None or y is None or x.outcome != y.outcome:
                out.append(Difference(mode, test, x, y))
        ha, hb = _health(ra), _health(rb)
        if ha != hb:
            out.append(Difference(mode, HEALTH, ha, hb))
    return out


def _pairs(a: list[BootReport], b: list[BootReport]) -> list[tuple[BootReport, BootReport]]:
    if len(a) == len(b):
        return list(zip(a, b, strict=True))
    one, many = (a, b) if len(a) == 1 else (b, a)
    pairs = [(one[0], r) for r in many]
    return pairs if one is a else [(y, x) for x, y in pairs]


def table(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    lines = [f"NO VERDICT: {why}"] if why else []
    lines += [f"{s.name}: {s.spec} ({s.label})" for s in (a, b)]
    for side in (a, b):
        for r in side.reports:
            lines.append(f"{side.name} {r.label}: {r.passed} passed, {r.failed} failed, "
                         f"{r.skipped} skipped: {r.verdict()}")
    if not diffs and not why:
        lines.append("no test's outcome differs")
    for d in diffs:
        lines += [f"{d.mode}: {d.test}", f"    A: {d.said(d.a)}", f"    B: {d.said(d.b)}"]
    return "\n".join(lines)


def markdown(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    lines = ["# gmemtest diff", "", *([f"**No verdict**: {why}", ""] if why else []),
             *(f"- {s.name}: `{s.spec}` ({s.label})" for s in (a, b)),
             "", f"{len(diffs)} difference(s)", ""]
    if diffs:
        lines += page.markdown_table(("mode", "test", "A", "B"),
                                     [(d.mode, f"`{d.test}`", d.said(d.a), d.said(d.b))
                                      for d in diffs])
    return "\n".join(lines) + "\n"


def html_page(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    """One self-contained page: each side's boots, then the differences, a side's result
    coloured by its outcome."""
    e = html.escape

    def cell(d: Difference, r: TestResult | None) -> str:
        good = r is not None and r.outcome.ok
        return f"<td class='text {'good' if good else 'bad'}'>{e(d.said(r))}</td>"

    rows = "".join(f"<tr><td>{e(d.mode)}</td><td class='text'>{e(d.test)}</td>"
                   f"{cell(d, d.a)}{cell(d, d.b)}</tr>" for d in diffs)
    boots = "".join(f"<tr class='{'pass' if r.ok else 'fail'}'><td>{s.name}</td>"
                    f"<td class='text'>{e(r.label)}</td><td>{r.passed}</td><td>{r.failed}</td>"
                    f"<td>{r.skipped}</td><td class='verdict'>{e(r.verdict())}</td></tr>"
                    for s in (a, b) for r in s.reports)
    body = ((f"<p class='fail'><b>No verdict</b>: {e(why)}</p>" if why else "")
            + "<p>" + "<br>".join(f"<b>{s.name}</b>: {e(s.spec)} ({e(s.label)})"
                                  for s in (a, b)) + "</p>"
            "<table><tr><th>side</th><th>mode</th><th>passed</th><th>failed</th>"
            f"<th>skipped</th><th>verdict</th></tr>{boots}</table>"
            f"<h2>{len(diffs)} difference(s)</h2>"
            + (f"<table><tr><th>mode</th><th>test</th><th>A</th><th>B</th></tr>{rows}</table>"
               if diffs else "" if why else "<p>No test's outcome differs.</p>"))
    return page.html_page("gmemtest diff", body)


def coverage_lines(a: tuple[Coverage, list[Patch], str],
                   b: tuple[Coverage, list[Patch], str]) -> list[str]:
    """With --coverage: each side's figure for its own series (its coverage, its series'
    patches, its kernel), and the instrumented functions some test ran on one side only."""
    lines = []
    for (cov, patches, label), name in ((a, "A"), (b, "B")):
        said = coverage.headline(coverage.to_json(cov, patches, label)) if patches else \
            "no series to draw"
        lines.append(f"coverage {name}: {said} (coverage-{name.lower()}/)")
    run_a, run_b = a[0].functions_run(), b[0].functions_run()
    lines += [f"run on A only: {f}" for f in sorted(run_a - run_b)]
    lines += [f"run on B only: {f}" for f in sorted(run_b - run_a)]
    return lines
