"""`gmemtest series walk`: what the 0-day bot does for a posting. Every prefix of the series is
built (incrementally, in the series tree, with ccache), the suite runs at the tip in both modes,
and when the tip fails, `git bisect run` with the bisect step over the series' own patches names
the first bad patch and its failing tests."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results import report, runlog
from gmemtest.vmtier import kernel, qemu, series
from gmemtest.vmtier.progress import Progress

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
    bisect_log: str = ""

    @property
    def ok(self) -> bool:
        return all(b.error is None for b in self.builds) and bool(self.suites) \
            and all(s.ok for s in self.suites)


def walk(mbox: Path, *, version: int | None, src: Path | None, fragments: list[str] | None,
         pytest_args: list[str], limits: qemu.Limits) -> Walk:
    progress = Progress()
    s = series.read(mbox, version)
    tree = series.apply(s, src, progress)
    result = Walk(s, series.info(tree)["base"], tree)
    commits = series.commits(tree, s.count)
    tip_build: kernel.Build | None = None
    for index, (sha, subject) in enumerate(commits, 1):
        progress.phase(f"build {index}/{s.count}", subject)
        series.checkout(tree, sha)
        t0 = time.monotonic()
        pb = PatchBuild(index, sha, subject)
        try:
            tip_build = kernel.build(tree, patches=False, fragments=fragments, progress=progress)
        except GmemtestError as e:
            pb.error = str(e).removeprefix("kernel build failed: ")
            tip_build = None
        pb.seconds = time.monotonic() - t0
        result.builds.append(pb)
    if tip_build is None:
        failed = next(b for b in result.builds if b.error)
        result.first_bad = failed
        return result
    stamp = time.strftime("%Y%m%d-%H%M%S")
    modes = vmtest.switch_modes(tree)
    result.suites = vmtest.run_modes(tip_build.bzimage, pytest_args, vmtest.guest_env(tip_build),
                                     limits=limits, progress=progress, stamp=f"{stamp}-tip",
                                     modes=modes)
    bad = next((o for o in result.suites if not o.ok), None)
    if bad is not None and bad.failures:
        mode = dict(modes)[bad.label]
        _bisect(result, commits, mode, list(bad.failures), limits)
    return result


def _bisect(result: Walk, commits: list[tuple[str, str]], cmdline: str, failing: list[str],
            limits: qemu.Limits) -> None:
    """`git bisect run` over the series' patches with the bisect step on the failing tests."""
    tree = result.tree
    base = f"{commits[0][0]}~1"
    names = sorted({t.split("::")[-1].split("[")[0] for t in failing})
    git = ["git", "-C", str(tree)]
    subprocess.run([*git, "bisect", "reset"], capture_output=True)
    subprocess.run([*git, "bisect", "start", commits[-1][0], base], check=True,
                   capture_output=True)
    try:
        proc = subprocess.run(
            [*git, "bisect", "run", sys.executable, "-m", "gmemtest.cli", "bisect-step",
             "--src", str(tree), "--build-dir", str(tree / ".gmemtest-build"),
             *(["--cmdline", cmdline] if cmdline else []), "-k", " or ".join(names),
             "--boot-timeout", str(limits.boot), "--test-timeout", str(limits.test),
             "--", "-q", "-p", "no:xdist"],
            capture_output=True, text=True)
    finally:
        result.bisect_log = subprocess.run([*git, "bisect", "log"], capture_output=True,
                                           text=True).stdout
        subprocess.run([*git, "bisect", "reset"], capture_output=True)
    m = re.search(r"^([0-9a-f]{40}) is the first bad commit", proc.stdout, re.M)
    if m:
        result.first_bad = next((b for b in result.builds if b.sha == m.group(1)), None)
        result.first_bad_tests = failing


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
    if w.first_bad is not None:
        tests = f"; failing: {', '.join(w.first_bad_tests)}" if w.first_bad_tests else \
            " (its build fails)"
        lines.append(f"first bad patch: {w.first_bad.index}/{w.series.count} "
                     f"\"{w.first_bad.subject}\" ({w.first_bad.sha[:12]}){tests}")
    elif w.ok:
        lines.append("every prefix builds and the tip passes")
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


def main(mbox: Path, *, version: int | None, src: Path | None, fragments: list[str] | None,
         pytest_args: list[str] | None, limits: qemu.Limits) -> int:
    out = vmtest.results_root() / time.strftime("series-walk-%Y%m%d-%H%M%S")
    with runlog.attached(out / "gmemtest.log"):
        w = walk(mbox, version=version, src=src, fragments=fragments,
                 pytest_args=pytest_args or qemu.parallelism(), limits=limits)
    (out / "walk.txt").write_text(table(w) + "\n")
    (out / "walk.md").write_text(markdown(w))
    ET.ElementTree(junit(w)).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    if w.bisect_log:
        (out / "bisect.log").write_text(w.bisect_log)
    print(table(w))
    print(f"reports: {out}/walk.md, walk.txt, junit.xml")
    return 0 if w.ok else 1
