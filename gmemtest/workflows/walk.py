"""`gmemtest series walk`: what the 0-day bot does for a posting. Every prefix of the series is
built (incrementally, in the series tree, with ccache), the suite runs at the tip in both modes,
and when tests fail at the tip they run first on the base, the tree without the series, by their
exact ids and in the mode where they failed: a failure already there predates the series and no
patch is blamed for it. For the rest, `git bisect run` with the bisect step over the series' own
patches names the first bad patch. No verdict rests on a boot that did not run its tests."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from gmemtest import tool
from gmemtest.errors import BuildFailed, GmemtestError
from gmemtest.results import coverage as coverage_of
from gmemtest.results import report, runlog
from gmemtest.results import walk as walk_report
from gmemtest.results.answer import Answer
from gmemtest.results.walk import PatchBuild, Walk
from gmemtest.vmtier import kernel, qemu, series
from gmemtest.vmtier.checkout import CHECKOUT
from gmemtest.vmtier.kernelspec import KernelSpec, Posted
from gmemtest.vmtier.progress import Progress

from . import coverage as cov
from . import vmtest


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
    st = kernel.series_tree(spec, progress)
    tree = st.path
    result = Walk(s.title(), s.subject, s.count, st.base, tree)
    commits = st.commits()
    at = spec.on_tree(tree)
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
            pb.error = e.detail
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
    result.error = report.not_run(result.suites)
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
    tool.git(tree, "bisect", "reset", check=False)
    tool.git(tree, "bisect", "start", commits[-1][0], base)
    try:
        proc = tool.git(tree, "bisect", "run", sys.executable, "-m", "gmemtest.cli",
                        "bisect-step", "--src", str(tree),
                        "--build-dir", str(tree / ".gmemtest-build"),
                        "--switch", mode.switch or "default",
                        "--boot-timeout", str(limits.boot), "--test-timeout", str(limits.test),
                        "--", *failing, "-q", "-p", "no:xdist", check=False)
    finally:
        result.bisect_log = tool.git(tree, "bisect", "log", check=False).stdout
        tool.git(tree, "bisect", "reset", check=False)
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", proc.stdout, re.M)
    if m:
        result.first_bad = next((b for b in result.builds if b.sha == m.group(1)), None)
        result.first_bad_tests = [f"{t} ({mode.label})" for t in failing]
    else:
        result.error = f"the bisection named no patch: {tool.last_line(proc)}"


def main(spec: KernelSpec, pytest_args: list[str] | None,
         limits: qemu.Limits, *, coverage: bool = False) -> Answer:
    """0 when every prefix builds and the tip passes, 1 otherwise; 2 and why without a verdict.
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
            w.coverage = f"coverage: {coverage_of.headline(doc)} (coverage/coverage.html)"
            w.error = report.not_run(m.boots)
    (out / "walk.txt").write_text(walk_report.table(w) + "\n")
    (out / "walk.md").write_text(walk_report.markdown(w))
    walk_report.write_junit(w, out / "junit.xml")
    if w.bisect_log:
        (out / "bisect.log").write_text(w.bisect_log)
    text = f"{walk_report.table(w)}\nreports: {out}/walk.md, walk.txt, junit.xml"
    if w.error is not None:
        return Answer(2, text, w.error)
    return Answer(0 if w.ok else 1, text)
