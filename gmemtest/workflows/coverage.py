"""`gmemtest coverage` (and `--coverage` on vm-test, series walk and diff): which lines of a
series the suite runs, in which boot, by which test.

The kernel under test is built again as its coverage build (gcov on the C files the series
touches, kconfigs/coverage; its own cached build, the lean one stays uninstrumented), booted in
each mode with the suite run one test at a time, the guest keeping each test's counters
(gmemtest.testing.gcov). gcov reads them against the build's .gcno files; the series' added
lines are placed on the tip (gmemtest.vmtier.patchlines) and the reports drawn
(gmemtest.results.coverage): coverage.md, coverage.html, coverage.info (lcov), coverage.json.
The per-function map of a tree's coverage is kept in the cache for `vm-test --affected`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmemtest import tool
from gmemtest.cache import cache_dir
from gmemtest.errors import GmemtestError, one_line
from gmemtest.results import coverage, report, runlog
from gmemtest.results.answer import Answer
from gmemtest.results.patches import Patch
from gmemtest.results.shape import ListOf, MapOf, Maybe, check, read_json
from gmemtest.testing import GUEST_PYTEST_PLUGINS
from gmemtest.testing.gcov import ENV as GCOV_ENV
from gmemtest.vmtier import kernel, patchlines, qemu, series
from gmemtest.vmtier.checkout import CHECKOUT
from gmemtest.vmtier.kernelspec import KernelSpec, Posted, Prebuilt, Tree
from gmemtest.vmtier.progress import Progress

from . import vmtest

# What a tree with no series of its own is measured on: the KVM files the series changes.
DEFAULT_FILES = ("virt/kvm/guest_memfd.c", "virt/kvm/kvm_main.c", "arch/x86/kvm/mmu/mmu.c",
                 "arch/x86/kvm/x86.c")


@dataclass
class Measured:
    """A coverage run: its build, its boots, the coverage and the series drawn on it."""

    build: kernel.Build
    boots: list[report.BootReport]
    coverage: coverage.Coverage
    patches: list[Patch]


def series_files(spec: KernelSpec) -> tuple[str, ...]:
    """The C files of the kernel the series changes: those instrumented."""
    texts: list[str] = []
    if spec.patches is not None:
        texts = [p.read_text(errors="replace") for p in spec.patches.patches]
    elif isinstance(spec.source, Posted):
        texts = [p.decode(errors="replace") for p in spec.source.series.patches]
    files = {m.group(1) for t in texts for m in re.finditer(r"^\+\+\+ b/(\S+\.c)$", t, re.M)
             if not m.group(1).startswith(("tools/", "samples/", "scripts/"))}
    return tuple(sorted(files)) or DEFAULT_FILES


def series_lines(spec: KernelSpec, build: kernel.Build, progress: Progress,
                 since: str | None = None) -> list[Patch]:
    """The series' patches with their added lines placed on the tip: a posted series', a patch
    set's, a series tree's (`series apply`), or a tree's commits after ``since``; none for a
    tree without a series."""
    src = spec.source
    if isinstance(src, Posted):
        assert build.source_path is not None
        return patchlines.lines(build.source_path, src.series.count)
    if spec.patches is not None:
        st = kernel.series_tree(spec, progress)
        return patchlines.lines(st.path, st.count)
    if isinstance(src, Tree):
        if since is not None:
            return patchlines.lines(src.path, patchlines.count_since(src.path, since))
        applied = series.info(src.path)
        if applied is not None:
            return patchlines.lines(src.path, applied.posted.count)
    return []


def instrumented(spec: KernelSpec, since: str | None = None) -> tuple[str, ...]:
    """The C files to instrument: those the series changes (a tree's: its commits after
    ``since``, or a series tree's series), else DEFAULT_FILES."""
    files = series_files(spec)
    if files == DEFAULT_FILES and isinstance(spec.source, Tree):
        tree = spec.source.path
        applied = series.info(tree)
        base = since or (applied.base_commit if applied else None)
        if base is not None:
            changed = patchlines.files_since(tree, base)
            files = tuple(sorted(f for f in changed if f.endswith(".c") and
                                 not f.startswith(("tools/", "samples/", "scripts/")))) \
                or DEFAULT_FILES
    return files


def read_boots(build: kernel.Build, boots: list[tuple[str, Path]]) -> coverage.Coverage:
    """The coverage the boots of ``build`` kept ((label, results directory) each), with the
    lines this configuration leaves out."""
    assert build.manifest is not None and build.dir is not None and build.source_path
    cov = coverage.read(build.dir, build.source_path, list(build.manifest.gcov), boots)
    for obj in build.manifest.gcov:
        cov.files[obj].excluded = coverage.excluded_lines(build.dir, build.source_path,
                                                          obj) or set()
    return cov


def coverage_build(spec: KernelSpec, progress: Progress, since: str | None = None
                   ) -> kernel.Build:
    """``spec``'s coverage build: gcov on the files the series changes."""
    if isinstance(spec.source, Prebuilt):
        raise GmemtestError(f"{spec.label()}: a built kernel cannot be measured (coverage "
                            "builds the kernel again, with gcov): name its source instead")
    files = instrumented(spec, since)
    build = kernel.resolve(spec.with_gcov(files), progress)
    assert build.manifest is not None
    if not build.manifest.gcov:
        raise GmemtestError(f"{build.label}: none of {', '.join(files)} is built in this "
                            "configuration: nothing to measure")
    return build


def measure(spec: KernelSpec, pytest_args: list[str], *, limits: qemu.Limits,
            progress: Progress, stamp: str, root: Path | None = None,
            since: str | None = None) -> Measured:
    """Build ``spec``'s coverage build, boot each mode with per-test collection, read it."""
    build = coverage_build(spec, progress, since)
    boots = vmtest.run_modes(build, ["-p", "no:xdist", *pytest_args], limits=limits,
                             progress=progress, stamp=f"{stamp}-coverage",
                             env={GCOV_ENV: "1"}, root=root)
    why = report.not_run(boots)
    if why:
        raise GmemtestError(f"the coverage boots did not run their tests: {why}")
    progress.phase("coverage", f"gcov over {sum(len(b.results) for b in boots)} tests")
    cov = read_boots(build, [(b.label, b.run.results) for b in boots if b.run is not None])
    return Measured(build, boots, cov, series_lines(spec, build, progress, since))


def write(m: Measured, out: Path) -> dict[str, Any]:
    """The reports of a coverage run, in ``out``; returns the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    assert m.build.source_path is not None
    doc = coverage.to_json(m.coverage, m.patches, m.build.label)
    (out / "coverage.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "coverage.md").write_text(coverage.markdown(doc))
    (out / "coverage.html").write_text(coverage.html_page(doc))
    (out / "coverage.info").write_text(coverage.lcov(m.coverage, m.build.source_path))
    return doc


# --- the map the affected-tests loop reads -------------------------------------------------

# Tests that took longer than this in the coverage run are left out where a loop wants a quick
# answer (a mutant's boots, `vm-test --affected`): the model fuzzer's reproducer tests check the
# shrinking, not the kernel (the fuzzer itself is quick and stays), and would alone cost minutes.
SLOWEST = 60.0


@dataclass(frozen=True)
class CoverageMap:
    """What a coverage run of a tree keeps for the loops after it: which tests ran each
    function, by file (``FILE -> FUNCTION -> ["boot: node id", ...]``); the series' added lines
    as drawn (None: a map made before it kept them); each test's seconds per boot."""

    tree: Path
    label: str
    made: str
    functions: dict[str, dict[str, list[str]]]
    series: list[coverage.DrawnPatch] | None
    seconds: dict[str, dict[str, float]]

    def slowest_seconds(self, node: str) -> float:
        """The longest a test took in any boot of the coverage run (0: not seen)."""
        return max((per.get(node, 0.0) for per in self.seconds.values()), default=0.0)

    def tests_of(self, file: str, function: str) -> list[str]:
        """The tests (``boot: node id``) that ran ``function`` of ``file``."""
        return self.functions.get(file, {}).get(function, [])

    def newer_tests(self, suite: list[str]) -> list[str]:
        """The test functions of ``suite`` that no boot of the map's coverage run saw
        (written since), of the test files some of whose mapped tests ran a line the series
        adds (a file of the harness's own tests, which never run the series, is no place for
        one to see a mutant)."""
        seen = {node.partition("[")[0] for per in self.seconds.values() for node in per}
        files = {t.split(": ", 1)[-1].partition("::")[0]
                 for p in self.series or [] for ln in p.lines for t in ln.tests}
        # By function: a test's parameters may come from the boot (the tree's selftests are
        # those its build made), so the host's ids of them are not the guest's; the
        # function's id selects all of them there.
        out: list[str] = []
        for t in suite:
            function = t.partition("[")[0]
            if function not in seen and function.partition("::")[0] in files \
                    and function not in out:
                out.append(function)
        return out


def map_path(tree: Path) -> Path:
    key = hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:16]
    return cache_dir("coverage") / f"map-{key}.json"


def save_map(m: Measured, doc: dict[str, Any] | None = None) -> Path:
    """For the tree the kernel was built from: which tests ran each function, by file (an
    edit of the tree is looked up in it, `vm-test --src TREE --affected BASE`), the series
    drawn (``doc``, :func:`write`'s: what `gmemtest mutate` mutates) and each test's seconds
    per boot (the order in which a mutant's tests run: the quick ones first)."""
    assert m.build.source_path is not None
    functions = {file: {fn: sorted(m.coverage.tests_of_function(file, fn))
                        for fn in fc.functions}
                 for file, fc in m.coverage.files.items() if fc.functions}
    seconds = {b.label: report.durations(b.run.results / "junit.xml") for b in m.boots
               if b.run is not None and (b.run.results / "junit.xml").is_file()}
    path = map_path(m.build.source_path)
    path.write_text(json.dumps({"tree": str(m.build.source_path), "label": m.build.label,
                                "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "functions": functions, "series": doc,
                                "seconds": seconds}) + "\n")
    return path


def _map_doc(tree: Path) -> dict[str, Any] | None:
    """The map of ``tree`` as its file holds it, its shape checked (None: none yet)."""
    path = map_path(tree)
    if not path.is_file():
        return None
    again = "; remove it and run `gmemtest coverage` again"
    doc: dict[str, Any] = read_json(path, "a coverage map", f"{path}: gone", hint=again)
    try:
        if isinstance(doc, dict):  # a map from before it kept the series and the seconds
            doc.setdefault("series", None)
            doc.setdefault("seconds", {})
        check(doc, {"tree": str, "label": str, "made": str,
                    "functions": MapOf(MapOf(ListOf(str))), "series": Maybe(dict),
                    "seconds": MapOf(MapOf((int, float)))}, str(path))
        if doc["series"] is not None:
            coverage.drawn(doc["series"])
    except (GmemtestError, KeyError, TypeError) as e:
        raise GmemtestError(f"{path}: a damaged coverage map ({one_line(e)}){again}") from None
    return doc


def load_map(tree: Path) -> CoverageMap | None:
    """The map :func:`save_map` kept for ``tree`` (None: none yet)."""
    doc = _map_doc(tree)
    if doc is None:
        return None
    return CoverageMap(Path(doc["tree"]), doc["label"], doc["made"], doc["functions"],
                       coverage.drawn(doc["series"]) if doc["series"] is not None else None,
                       {b: {n: float(s) for n, s in per.items()}
                        for b, per in doc["seconds"].items()})


def suite_tests(checkout: Path = CHECKOUT) -> list[str]:
    """The node ids of the suite as the guest collects it (host-only tests left out)."""
    env = {**os.environ, "GMEMTEST_IN_GUEST": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = tool.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:xdist",
                     *GUEST_PYTEST_PLUGINS, checkout / "tests"], "collecting the suite",
                    cwd=checkout, env=env, check=False)
    if proc.returncode != 0:
        raise GmemtestError(f"the suite does not collect (pytest exited {proc.returncode}: "
                            f"{tool.last_line(proc)}): run `make test` to see why")
    return [ln.strip() for ln in proc.stdout.splitlines() if "::" in ln]


def adopt_map(source: Path, tree: Path) -> bool:
    """Give ``tree`` the map of ``source`` when every file the map measured is the same in
    both (a series applied as commits to the same base as a patch set): True if it did."""
    kept = _map_doc(source)
    if kept is None or map_path(tree).is_file():
        return False
    for file in kept["functions"]:
        a, b = source / file, tree / file
        if not b.is_file() or a.read_bytes() != b.read_bytes():
            return False
    map_path(tree).write_text(json.dumps({**kept, "tree": str(tree)}) + "\n")
    return True


def main(spec: KernelSpec, pytest_args: list[str] | None, limits: qemu.Limits,
         out: Path | None, since: str | None = None) -> Answer:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = out or vmtest.results_root() / f"coverage-{stamp}"
    progress = Progress()
    with runlog.results_dir(out):
        m = measure(spec, pytest_args or [], limits=limits, progress=progress, stamp=stamp,
                    root=out, since=since)
        doc = write(m, out)
        kept = save_map(m, doc)
    return Answer(0 if all(b.ok for b in m.boots) else 1, "\n".join([
        report.summary(m.boots),
        f"coverage: {coverage.headline(doc)}" if m.patches else
        f"coverage: {m.build.label} has no series to draw (a tree: --since REV names its "
        "base); the lcov tracefile covers the instrumented files",
        f"reports: {out}/coverage.html, coverage.md, coverage.info, coverage.json; "
        f"the map for --affected: {kept}"]))
