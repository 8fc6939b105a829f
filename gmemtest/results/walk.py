"""A series walk (`gmemtest series walk`) as a record, and its reports: the terminal's lines,
Markdown, and JUnit (a testcase per prefix's build and per suite at the tip)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import junit, page
from .report import BootReport


@dataclass
class PatchBuild:
    """One prefix of the series (up to and with patch ``index``), built."""

    index: int
    sha: str
    subject: str
    error: str | None = None  # the build's failure: the compiler's first error
    seconds: float = 0.0


@dataclass
class Walk:
    """A series walk's record: the series (its title, subject and patch count), its base and
    tree, each prefix's build, the suites at the tip, and what the walk concluded."""

    title: str
    subject: str
    count: int
    base: str
    tree: Path
    builds: list[PatchBuild] = field(default_factory=list)
    suites: list[BootReport] = field(default_factory=list)
    first_bad: PatchBuild | None = None
    first_bad_tests: list[str] = field(default_factory=list)
    # Tests that fail at the tip and on the base too, in their mode: older than the series.
    predates: dict[str, str] = field(default_factory=dict)
    bisect_log: str = ""
    error: str | None = None  # why there is no verdict (a boot that did not run its tests)
    coverage: str | None = None  # with --coverage: the tip's figure and where its report is

    @property
    def ok(self) -> bool:
        return self.error is None and all(b.error is None for b in self.builds) \
            and bool(self.suites) and all(s.ok for s in self.suites)


COLUMNS = ("patch", "commit", "build", "seconds", "subject")


def _rows(w: Walk) -> list[tuple[str, ...]]:
    return [(f"{b.index}/{w.count}", b.sha[:12], "ok" if b.error is None else "FAILED",
             f"{b.seconds:.0f}", b.subject) for b in w.builds]


def table(w: Walk) -> str:
    lines = [f"series {w.title} on {w.base}",
             *page.text_table(COLUMNS, _rows(w), last_free=True, rule=False)]
    for b in w.builds:
        if b.error:
            lines.append(f"build of {b.index}/{w.count} failed: {b.error}")
    for o in w.suites:
        lines.append(f"suite at the tip ({o.label}): {o.passed} passed, {o.failed} failed, "
                     f"{o.skipped} skipped: {o.verdict()}")
        lines += [f"   failed: {n}: {why}" for n, why in list(o.failures.items())[:20]]
    for test, why in w.predates.items():
        lines.append(f"fails before the series (on the base too): {test}: {why}")
    if w.coverage:
        lines.append(w.coverage)
    if w.error is not None:
        lines.insert(0, f"NO VERDICT: {w.error}")
    elif w.first_bad is not None:
        tests = f"; failing: {', '.join(w.first_bad_tests)}" if w.first_bad_tests else \
            " (its build fails)"
        lines.append(f"first bad patch: {w.first_bad.index}/{w.count} "
                     f"\"{w.first_bad.subject}\" ({w.first_bad.sha[:12]}){tests}")
    elif w.ok:
        lines.append("every prefix builds and the tip passes")
    elif w.predates and not w.first_bad_tests:
        lines.append("no patch is blamed: every failure at the tip predates the series")
    return "\n".join(lines)


def markdown(w: Walk) -> str:
    lines = [f"# Series walk: {w.title}", "", f"Base: {w.base}", "",
             *page.markdown_table(COLUMNS, _rows(w))]
    lines += ["", "```", table(w), "```", ""]
    return "\n".join(lines)


def write_junit(w: Walk, path: Path) -> None:
    """A testcase per prefix's build and per suite at the tip."""
    builds = [junit.Case("series.build", f"{b.index:02d}/{w.count} {b.subject}",
                         failure=b.error, time=b.seconds) for b in w.builds]
    tip = [junit.Case("series.suite", o.label, failure=None if o.ok else o.verdict(),
                      text="\n".join(f"{n}: {why}" for n, why in o.failures.items()))
           for o in w.suites]
    junit.write(f"gmemtest series walk: {w.subject}",
                [junit.suite("builds", builds), junit.suite("suite at the tip", tip)], path)
