"""`gmemtest diff A B`: the same suite on two kernels, in both modes, and every test whose
outcome differs, with each side's message: how a reviewer sees what v9 changed against v8, or
where a posting departs from kpatches/. A and B are kernel specs (gmemtest.vmtier.kernelspec),
both parsed and checked before anything is built. No verdict rests on a side that did not run
its tests: that is an error, said first."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

from gmemtest.results import coverage as coverage_of
from gmemtest.results import report, runlog
from gmemtest.results.outcome import Outcome, TestResult, short
from gmemtest.results.render import STYLE
from gmemtest.vmtier import kernel, qemu
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.progress import Progress

from . import coverage as cov
from . import vmtest


@dataclass
class Side:
    """One kernel of the comparison: what the user named, its build, its boots (and with
    --coverage, what they ran)."""

    spec: str
    build: kernel.Build
    reports: list[report.BootReport]
    measured: cov.Measured | None = None

    @property
    def label(self) -> str:
        return self.build.label


@dataclass(frozen=True)
class Difference:
    mode: str
    test: str
    a: str  # outcome, and the message behind it
    b: str


def run(word: str, spec: KernelSpec, name: str, pytest_args: list[str], limits: qemu.Limits,
        progress: Progress, stamp: str, root: Path, *, coverage: bool = False) -> Side:
    """Build and boot one side; with ``coverage``, its coverage build's boots (the suite one
    test at a time) are the side's, and its reports go to ROOT/coverage-NAME."""
    if coverage:
        m = cov.measure(spec, pytest_args, limits=limits, progress=progress,
                        stamp=f"{stamp}-diff-{name}", root=root)
        cov.write(m, root / f"coverage-{name}")
        return Side(word, m.build, m.boots, m)
    build = kernel.resolve(spec, progress)
    reports = vmtest.run_modes(build, pytest_args, limits=limits, progress=progress,
                               stamp=f"{stamp}-diff-{name}", root=root)
    return Side(word, build, reports)


def differences(a: Side, b: Side) -> list[Difference]:
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
                out.append(Difference(mode, test, _say(x), _say(y)))
        if [str(f) for f in ra.findings] != [str(f) for f in rb.findings]:
            out.append(Difference(mode, "(kernel health)",
                                  "; ".join(str(f) for f in ra.findings) or "no finding",
                                  "; ".join(str(f) for f in rb.findings) or "no finding"))
    return out


def _pairs(a: Side, b: Side) -> list[tuple[report.BootReport, report.BootReport]]:
    if len(a.reports) == len(b.reports):
        return list(zip(a.reports, b.reports, strict=True))
    one, many = (a, b) if len(a.reports) == 1 else (b, a)
    pairs = [(one.reports[0], r) for r in many.reports]
    return pairs if one is a else [(y, x) for x, y in pairs]


def _say(r: TestResult | None) -> str:
    if r is None:
        return "absent"
    return str(r.outcome) + (f": {short(r.message)}" if r.message and
                             r.outcome is not Outcome.PASSED else "")


def table(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    lines = [f"NO VERDICT: {why}"] if why else []
    lines += [f"A: {a.spec} ({a.label})", f"B: {b.spec} ({b.label})"]
    for side, name in ((a, "A"), (b, "B")):
        for r in side.reports:
            lines.append(f"{name} {r.label}: {r.passed} passed, {r.failed} failed, "
                         f"{r.skipped} skipped: {r.verdict()}")
    if not diffs and not why:
        lines.append("no test's outcome differs")
    for d in diffs:
        lines += [f"{d.mode}: {d.test}", f"    A: {d.a}", f"    B: {d.b}"]
    return "\n".join(lines)


def markdown(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    lines = ["# gmemtest diff", "", *([f"**No verdict**: {why}", ""] if why else []),
             f"- A: `{a.spec}` ({a.label})", f"- B: `{b.spec}` ({b.label})",
             "", f"{len(diffs)} difference(s)", ""]
    if diffs:
        lines += ["| mode | test | A | B |", "|---|---|---|---|"]
        lines += [f"| {d.mode} | `{d.test}` | {d.a.replace('|', '/')} | {d.b.replace('|', '/')} |"
                  for d in diffs]
    return "\n".join(lines) + "\n"


DIFF_STYLE = """
table.diff th, table.diff td { text-align: left; vertical-align: top; }
td.good { background: #dfd; } td.bad { background: #fdd; }
"""


def html_page(a: Side, b: Side, diffs: list[Difference], why: str | None = None) -> str:
    """One self-contained page in the matrix report's style."""
    e = html.escape
    def cell(outcome: str) -> str:
        good = outcome.split(":")[0] in ("passed", "skipped", "xfailed", "no finding")
        return f"<td class='{'good' if good else 'bad'}'>{e(outcome)}</td>"

    rows = "".join(f"<tr><td>{e(d.mode)}</td><td>{e(d.test)}</td>{cell(d.a)}{cell(d.b)}</tr>"
                   for d in diffs)
    boots = "".join(f"<tr class='{'pass' if r.ok else 'fail'}'><td>{n}</td><td>{e(r.label)}</td>"
                    f"<td>{r.passed}</td><td>{r.failed}</td><td>{r.skipped}</td>"
                    f"<td class='verdict'>{e(r.verdict())}</td></tr>"
                    for s, n in ((a, "A"), (b, "B")) for r in s.reports)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>gmemtest diff</title>"
            f"<style>{STYLE}{DIFF_STYLE}</style></head><body><h1>gmemtest diff</h1>"
            f"<p>{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}</p>"
            + (f"<p class='fail'><b>No verdict</b>: {e(why)}</p>" if why else "")
            + f"<p><b>A</b>: {e(a.spec)} ({e(a.label)})<br><b>B</b>: {e(b.spec)} ({e(b.label)})</p>"
            f"<table><tr><th>side</th><th>mode</th><th>passed</th><th>failed</th><th>skipped"
            f"</th><th>verdict</th></tr>{boots}</table>"
            f"<h2>{len(diffs)} difference(s)</h2>"
            + (f"<table class='diff'><tr><th>mode</th><th>test</th><th>A</th><th>B</th></tr>"
               f"{rows}</table>"
               if diffs else "" if why else "<p>No test's outcome differs.</p>")
            + "</body></html>\n")


def not_run(a: Side, b: Side) -> str | None:
    """Why there is no verdict: a boot of either side that did not run its tests, or two
    sides that ran no test at all. None when both ran."""
    for side, name in ((a, "A"), (b, "B")):
        why = vmtest.not_run(side.reports)
        if why:
            return f"side {name} ({side.spec}): {why}"
        if not any(r.results for r in side.reports):
            return f"side {name} ({side.spec}): no test ran (check the pytest arguments)"
    return None


def coverage_lines(a: Side, b: Side) -> list[str]:
    """With --coverage: each side's figure for its own series, and the instrumented functions
    some test ran on one side only."""
    if a.measured is None or b.measured is None:
        return []
    lines = []
    for side, name in ((a, "A"), (b, "B")):
        m = side.measured
        assert m is not None
        doc = coverage_of.to_json(m.coverage, m.patches, m.build.label)
        lines.append(f"coverage {name}: " + (cov.headline(doc) if m.patches else
                                             "no series to draw") + f" (coverage-{name.lower()}/)")
    run_a, run_b = cov.functions_run(a.measured.coverage), cov.functions_run(b.measured.coverage)
    lines += [f"run on A only: {f}" for f in sorted(run_a - run_b)]
    lines += [f"run on B only: {f}" for f in sorted(run_b - run_a)]
    return lines


def main(a_word: str, a: KernelSpec, b_word: str, b: KernelSpec,
         pytest_args: list[str] | None, limits: qemu.Limits, out: Path, *,
         coverage: bool = False) -> tuple[int, str | None]:
    """Exit 0 when no outcome differs, 1 when some do; (2, why) when a side did not run.
    ``coverage``: each side is its coverage build, and what each side's tests ran is compared
    too."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    progress = Progress()
    args = (pytest_args or []) if coverage else (pytest_args or qemu.parallelism())
    with runlog.results_dir(out):
        side_a = run(a_word, a, "a", args, limits, progress, stamp, out, coverage=coverage)
        side_b = run(b_word, b, "b", args, limits, progress, stamp, out, coverage=coverage)
    why = not_run(side_a, side_b)
    diffs = differences(side_a, side_b)
    text = table(side_a, side_b, diffs, why)
    measured = coverage_lines(side_a, side_b)
    if measured:
        text += "\n" + "\n".join(measured)
        (out / "coverage.txt").write_text("\n".join(measured) + "\n")
    (out / "diff.txt").write_text(text + "\n")
    (out / "diff.md").write_text(markdown(side_a, side_b, diffs, why))
    (out / "diff.html").write_text(html_page(side_a, side_b, diffs, why))
    (out / "diff.json").write_text(json.dumps({"verdict": None if why else bool(diffs),
                                               "error": why,
                                               "differences": [d.__dict__ for d in diffs]},
                                              indent=1) + "\n")
    print(text)
    print(f"reports: {out}/diff.html, diff.md, diff.txt, diff.json")
    if why:
        return 2, why
    return (1 if diffs else 0), None
