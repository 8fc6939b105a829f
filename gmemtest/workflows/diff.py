"""`gmemtest diff A B`: the same suite on two kernels, in both modes, and every test whose
outcome differs, with each side's message: how a reviewer sees what v9 changed against v8, or
where a posting departs from kpatches/. A and B are each a built kernel (its build directory or
bzImage), a patch directory (with a ``series`` file, on Debian's source), a series mbox or a
kernel tree."""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results import report, runlog
from gmemtest.results.outcome import Outcome, TestResult, short
from gmemtest.results.render import STYLE
from gmemtest.vmtier import kernel, qemu, series
from gmemtest.vmtier.progress import Progress

from . import vmtest


@dataclass
class Side:
    """One kernel of the comparison: what the user named, its build, its boots."""

    spec: str
    label: str
    bzimage: Path
    headers: Path | None
    source: Path | None
    reports: list[report.BootReport]


@dataclass(frozen=True)
class Difference:
    mode: str
    test: str
    a: str  # outcome, and the message behind it
    b: str


def resolve(spec: str, progress: Progress) -> tuple[str, Path, Path | None, Path | None]:
    """A kernel named on the command line: (label, bzImage, headers, source tree)."""
    p = Path(spec)
    manifest = None
    if p.is_file() and p.name == "bzImage":
        manifest = p.parents[3] / "gmemtest-manifest.json"
    elif p.is_dir() and (p / "gmemtest-manifest.json").is_file():
        manifest = p / "gmemtest-manifest.json"
    if manifest is not None:
        if not manifest.is_file():
            return spec, p, None, None
        m = json.loads(manifest.read_text())
        src = Path(m["source"]["path"])
        return _label(m["source"]), Path(m["bzImage"]), Path(m["headers"]), src
    if p.is_dir() and (p / "series").is_file():
        b = kernel.build(None, patches=True, patch_dir=p.resolve(), progress=progress)
    elif p.is_file():
        b = kernel.build(series.tree(p, progress=progress), patches=False, progress=progress)
    elif p.is_dir() and (p / "Makefile").is_file():
        b = kernel.build(p, patches=False, progress=progress)
    else:
        raise GmemtestError(f"{spec}: not a built kernel, a patch directory (series file), a "
                            "series mbox or a kernel tree")
    return _label(asdict(b.source)), b.bzimage, b.headers, b.source.path


def _label(source: dict[str, object]) -> str:
    s = source.get("series")
    if isinstance(s, dict):
        info = s["series"]
        return f"series v{info['version']} \"{info['subject']}\""
    patches = source.get("patches") or []
    extra = f" + {len(patches)} patches" if isinstance(patches, list) and patches else ""
    return f"{source.get('commit') or source.get('version')}{extra}"


def run(spec: str, name: str, pytest_args: list[str], limits: qemu.Limits,
        progress: Progress, stamp: str) -> Side:
    label, bzimage, headers, src = resolve(spec, progress)
    modes = vmtest.switch_modes(src) if src is not None else vmtest.MODES
    env = {"GMEMTEST_KERNEL_HEADERS": str(headers)} if headers else {}
    reports = vmtest.run_modes(bzimage, pytest_args, env, limits=limits, progress=progress,
                               stamp=f"{stamp}-diff-{name}", modes=modes)
    return Side(spec, label, bzimage, headers, src, reports)


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


def table(a: Side, b: Side, diffs: list[Difference]) -> str:
    lines = [f"A: {a.spec} ({a.label})", f"B: {b.spec} ({b.label})"]
    for side, name in ((a, "A"), (b, "B")):
        for r in side.reports:
            lines.append(f"{name} {r.label}: {r.passed} passed, {r.failed} failed, "
                         f"{r.skipped} skipped: {r.verdict()}")
    if not diffs:
        lines.append("no test's outcome differs")
    for d in diffs:
        lines += [f"{d.mode}: {d.test}", f"    A: {d.a}", f"    B: {d.b}"]
    return "\n".join(lines)


def markdown(a: Side, b: Side, diffs: list[Difference]) -> str:
    lines = ["# gmemtest diff", "", f"- A: `{a.spec}` ({a.label})", f"- B: `{b.spec}` ({b.label})",
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


def html_page(a: Side, b: Side, diffs: list[Difference]) -> str:
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
            f"<p><b>A</b>: {e(a.spec)} ({e(a.label)})<br><b>B</b>: {e(b.spec)} ({e(b.label)})</p>"
            f"<table><tr><th>side</th><th>mode</th><th>passed</th><th>failed</th><th>skipped"
            f"</th><th>verdict</th></tr>{boots}</table>"
            f"<h2>{len(diffs)} difference(s)</h2>"
            + (f"<table class='diff'><tr><th>mode</th><th>test</th><th>A</th><th>B</th></tr>"
               f"{rows}</table>"
               if diffs else "<p>No test's outcome differs.</p>")
            + "</body></html>\n")


def main(a_spec: str, b_spec: str, pytest_args: list[str] | None, limits: qemu.Limits,
         out: Path | None = None) -> int:
    """Exit 0 when no outcome differs, 1 when some do."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out or vmtest.results_root() / f"diff-{stamp}"
    progress = Progress()
    args = pytest_args or qemu.parallelism()
    with runlog.attached(out / "gmemtest.log"):
        a = run(a_spec, "a", args, limits, progress, stamp)
        b = run(b_spec, "b", args, limits, progress, stamp)
    diffs = differences(a, b)
    (out / "diff.txt").write_text(table(a, b, diffs) + "\n")
    (out / "diff.md").write_text(markdown(a, b, diffs))
    (out / "diff.html").write_text(html_page(a, b, diffs))
    (out / "diff.json").write_text(json.dumps([d.__dict__ for d in diffs], indent=1) + "\n")
    print(table(a, b, diffs))
    print(f"reports: {out}/diff.html, diff.md, diff.txt, diff.json")
    return 1 if diffs else 0
