"""`gmemtest series walk`: what the 0-day bot does for a posting. Every prefix of the series is
built (incrementally, in the series tree, with ccache), the suite runs at the tip in both modes,
and when tests fail at the tip they run first on the base, the tree without the series, by their
exact ids and in the mode where they failed: a failure already there predates the series and no
patch is blamed for it. For the rest, `git bisect run` with the bisect step over the series' own
patches names the first bad patch. No verdict rests on a boot that did not run its tests."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from gmemtest.errors import BuildFailed, GmemtestError
from gmemtest.results import report, runlog
from gmemtest.vmtier import kernel, qemu, series
from gmemtest.vmtier.checkout import CHECKOUT
from gmemtest.vmtier.kernelspec import KernelSpec, Posted, Tree
from gmemtest.vmtier.progress import Progress

from . import coverage as cov
from . import vmtest


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
    series: series.Series
    base: str
    tree: Path
    builds: list[PatchBuild] = field(default_factory=list)
    suites: list[report.BootReport] = field(default_factory=list)
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


def pytest_id(junit_name: str, root: Path = CHECKOUT) -> str:
    """A test's pytest node id (``tests/test_x.py::test_y[param]``) from its JUnit name
    (``tests.test_x::test_y[param]``): what selects exactly that test, parameters included."""
    classname, _, name = junit_name.partition("::")
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        path = "/".join(parts[:n]) + ".py"
        if (root / path).is_file():
            return "::".join([path, *parts[n:], name])
    raise GmemtestError(f"test {junit_name}: no module of this checkout holds it")


def walk(spec: KernelSpec, pytest_args: list[str], limits: qemu.Limits) -> Walk:
    progress = Progress()
    posted = spec.source
    assert isinstance(posted, Posted)
    s = posted.series
    base_tree, base_name = kernel.base_of(posted, progress)
    tree = series.apply(s, base_tree, base_name, progress)
    result = Walk(s, base_name, tree)
    commits = series.commits(tree, s.count)
    at = KernelSpec(Tree(tree), None, spec.fragments)
    tip_build: kernel.Build | None = None
    for index, (sha, subject) in enumerate(commits, 1):
        progress.phase(f"build {index}/{s.count}", subject)
        series.checkout(tree, sha)
        t0 = time.monotonic()
        pb = PatchBuild(index, sha, subject)
        try:
            tip_build = kernel.resolve(at, progress)
        except BuildFailed as e:
            if not e.stage.tree_fault:
                raise
            pb.error = str(e).removeprefix("kernel build failed: ")
            tip_build = None
        pb.seconds = time.monotonic() - t0
        result.builds.append(pb)
    if tip_build is None:
        result.first_bad = next(b for b in result.builds if b.error)
        return result
    stamp = time.strftime("%Y%m%d-%H%M%S")
    boots = vmtest.modes(tip_build)
    result.suites = vmtest.run_modes(tip_build, pytest_args, limits=limits, progress=progress,
                                     stamp=f"{stamp}-tip", boots=boots)
    result.error = vmtest.not_run(result.suites)
    if result.error is not None:
        return result
    failing = {(mode, pytest_id(name)): why for mode, o in zip(boots, result.suites, strict=True)
               for name, why in o.failures.items()}
    if not failing:
        return result
    # The base first: a test that fails there too fails before the series.
    series.checkout(tree, f"{commits[0][0]}~1")
    try:
        base_build = kernel.resolve(at, progress)
    finally:
        series.checkout(tree, commits[-1][0])
    new: dict[vmtest.Mode, list[str]] = {}
    for mode in dict.fromkeys(m for m, _ in failing):
        ids = [t for m, t in failing if m == mode]
        o = vmtest.run_modes(base_build, [*ids, "-p", "no:xdist"], limits=limits,
                             progress=progress, stamp=f"{stamp}-base",
                             boots=(vmtest.counterpart(mode, base_build),))[0]
        if not o.ran:
            result.error = f"the base did not run the failing tests ({mode.label}): {o.problem}"
            return result
        base_failures = {pytest_id(n) for n in o.failures}
        for t in ids:
            if t in base_failures:
                result.predates[f"{t} ({mode.label})"] = failing[(mode, t)]
            else:
                new.setdefault(mode, []).append(t)
    if new:
        mode, ids = next(iter(new.items()))
        _bisect(result, commits, mode, ids, limits)
    return result


def _bisect(result: Walk, commits: list[tuple[str, str]], mode: vmtest.Mode,
            failing: list[str], limits: qemu.Limits) -> None:
    """`git bisect run` over the series' patches with the bisect step on the failing tests,
    by their exact ids, in the mode where they failed."""
    tree = result.tree
    base = f"{commits[0][0]}~1"
    git = ["git", "-C", str(tree)]
    subprocess.run([*git, "bisect", "reset"], capture_output=True)
    subprocess.run([*git, "bisect", "start", commits[-1][0], base], check=True,
                   capture_output=True)
    try:
        proc = subprocess.run(
            [*git, "bisect", "run", sys.executable, "-m", "gmemtest.cli", "bisect-step",
             "--src", str(tree), "--build-dir", str(tree / ".gmemtest-build"),
             "--switch", mode.switch or "default",
             "--boot-timeout", str(limits.boot), "--test-timeout", str(limits.test),
             "--", *failing, "-q", "-p", "no:xdist"],
            capture_output=True, text=True)
    finally:
        result.bisect_log = subprocess.run([*git, "bisect", "log"], capture_output=True,
                                           text=True).stdout
        subprocess.run([*git, "bisect", "reset"], capture_output=True)
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", proc.stdout, re.M)
    if m:
        result.first_bad = next((b for b in result.builds if b.sha == m.group(1)), None)
        result.first_bad_tests = [f"{t} ({mode.label})" for t in failing]
    else:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["?"])
        result.error = f"the bisection named no patch: {last[-1]}"


COLUMNS = ("patch", "commit", "build", "seconds", "subject")


def _rows(w: Walk) -> list[tuple[str, ...]]:
    return [(f"{b.index}/{w.series.count}", b.sha[:12], "ok" if b.error is None else "FAILED",
             f"{b.seconds:.0f}", b.subject) for b in w.builds]


def table(w: Walk) -> str:
    rows = [COLUMNS, *_rows(w)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = [f"series {w.series.title()} on {w.base}"]
    lines += ["  ".join(c.ljust(wd) for c, wd in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
              for r in rows]
    for b in w.builds:
        if b.error:
            lines.append(f"build of {b.index}/{w.series.count} failed: {b.error}")
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
        lines.append(f"first bad patch: {w.first_bad.index}/{w.series.count} "
                     f"\"{w.first_bad.subject}\" ({w.first_bad.sha[:12]}){tests}")
    elif w.ok:
        lines.append("every prefix builds and the tip passes")
    elif w.predates and not w.first_bad_tests:
        lines.append("no patch is blamed: every failure at the tip predates the series")
    return "\n".join(lines)


def markdown(w: Walk) -> str:
    lines = [f"# Series walk: {w.series.title()}", "", f"Base: {w.base}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _rows(w)]
    lines += ["", "```", table(w), "```", ""]
    return "\n".join(lines)


def junit(w: Walk) -> ET.Element:
    """A testcase per patch build and per suite at the tip, and the first bad patch's."""
    suites = ET.Element("testsuites", name=f"gmemtest series walk: {w.series.subject}")
    builds = ET.SubElement(suites, "testsuite", name="builds")
    for b in w.builds:
        case = ET.SubElement(builds, "testcase", classname="series.build",
                             name=f"{b.index:02d}/{w.series.count} {b.subject}",
                             time=f"{b.seconds:.1f}")
        if b.error:
            ET.SubElement(case, "failure", message=b.error)
    tip = ET.SubElement(suites, "testsuite", name="suite at the tip")
    for o in w.suites:
        case = ET.SubElement(tip, "testcase", classname="series.suite", name=o.label)
        if not o.ok:
            ET.SubElement(case, "failure", message=o.verdict()).text = "\n".join(
                f"{n}: {why}" for n, why in o.failures.items())
    for s in (builds, tip):
        cases = s.findall("testcase")
        s.set("tests", str(len(cases)))
        s.set("failures", str(sum(c.find("failure") is not None for c in cases)))
    ET.indent(suites)
    return suites


def main(spec: KernelSpec, pytest_args: list[str] | None,
         limits: qemu.Limits, *, coverage: bool = False) -> tuple[int, str | None]:
    """0 when every prefix builds and the tip passes, 1 otherwise; (2, why) without a verdict.
    ``coverage``: then the tip's coverage build runs the suite too, and the reports draw the
    series' lines run (out/coverage/)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = vmtest.results_root() / f"series-walk-{stamp}"
    with runlog.results_dir(out):
        w = walk(spec, pytest_args or qemu.parallelism(), limits)
        if coverage and w.error is None and w.suites:
            m = cov.measure(spec, pytest_args or [], limits=limits, progress=Progress(),
                            stamp=stamp, root=out)
            doc = cov.write(m, out / "coverage")
            w.coverage = f"coverage: {cov.headline(doc)} (coverage/coverage.html)"
            w.error = vmtest.not_run(m.boots)
    (out / "walk.txt").write_text(table(w) + "\n")
    (out / "walk.md").write_text(markdown(w))
    ET.ElementTree(junit(w)).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    if w.bisect_log:
        (out / "bisect.log").write_text(w.bisect_log)
    print(table(w))
    print(f"reports: {out}/walk.md, walk.txt, junit.xml")
    if w.error is not None:
        return 2, w.error
    return (0 if w.ok else 1), None
