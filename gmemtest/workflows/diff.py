"""`gmemtest diff A B`: the same suite on two kernels, in both modes, and every test whose
outcome differs, with each side's message: how a reviewer sees what v9 changed against v8, or
where a posting departs from kpatches/. A and B are kernel specs (gmemtest.vmtier.kernelspec),
both parsed and checked before anything is built. No verdict rests on a side that did not run
its tests: that is an error, said first."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from gmemtest.results import comparison, report, runlog
from gmemtest.results.answer import Answer
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

    def view(self, name: str) -> comparison.Side:
        """The side as the reports name it (``name``: A or B)."""
        return comparison.Side(name, self.spec, self.label, self.reports)


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


def not_run(a: Side, b: Side) -> str | None:
    """Why there is no verdict: a boot of either side that did not run its tests, or two
    sides that ran no test at all. None when both ran."""
    for side, name in ((a, "A"), (b, "B")):
        why = report.not_run(side.reports)
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
    return comparison.coverage_lines(
        (a.measured.coverage, a.measured.patches, a.label),
        (b.measured.coverage, b.measured.patches, b.label))


def main(a_word: str, a: KernelSpec, b_word: str, b: KernelSpec,
         pytest_args: list[str] | None, limits: qemu.Limits, out: Path, *,
         coverage: bool = False) -> Answer:
    """Exit 0 when no outcome differs, 1 when some do; 2 and why when a side did not run.
    ``coverage``: each side is its coverage build, and what each side's tests ran is compared
    too."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    progress = Progress()
    args = (pytest_args or []) if coverage else (pytest_args or qemu.parallelism())
    with runlog.results_dir(out):
        side_a = run(a_word, a, "a", args, limits, progress, stamp, out, coverage=coverage)
        side_b = run(b_word, b, "b", args, limits, progress, stamp, out, coverage=coverage)
    why = not_run(side_a, side_b)
    diffs = comparison.differences(side_a.reports, side_b.reports)
    va, vb = side_a.view("A"), side_b.view("B")
    text = comparison.table(va, vb, diffs, why)
    measured = coverage_lines(side_a, side_b)
    if measured:
        text += "\n" + "\n".join(measured)
        (out / "coverage.txt").write_text("\n".join(measured) + "\n")
    (out / "diff.txt").write_text(text + "\n")
    (out / "diff.md").write_text(comparison.markdown(va, vb, diffs, why))
    (out / "diff.html").write_text(comparison.html_page(va, vb, diffs, why))
    (out / "diff.json").write_text(json.dumps({"verdict": None if why else bool(diffs),
                                               "error": why,
                                               "differences": [d.as_json() for d in diffs]},
                                              indent=1) + "\n")
    text += f"\nreports: {out}/diff.html, diff.md, diff.txt, diff.json"
    if why:
        return Answer(2, text, why)
    return Answer(1 if diffs else 0, text)
