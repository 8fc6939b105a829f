"""`gmemtest mutate`: which small mistakes in a series the suite would let through.

The mutants come from the series' added lines of C that the coverage map says some test runs
(gmemtest.vmtier.mutants; the map is `gmemtest coverage`'s, made first when the tree has none).
Each is written into a scratch copy of the kernel tree (hard links, the mutated file replaced,
never written through), built incrementally in the copy's own build directory (ccache gives the
first build; the next mutants' builds run ahead, at a lower priority), booted in both modes,
each boot running only the tests that ran the mutant's line in that mode (a test that never
runs the line cannot tell the mutant from the original), the quickest first, stopping at the
first failure or kernel report; once one boot has killed it the other stops. A mutant that
survives the quickest ``most`` boots again with the rest, and with the tests newer than the
coverage map (the map cannot say whether they run the line): survived means that every test
that ran its line passed (but for those too slow for a mutant's limits, slowest_test()). Each
test's time limit is three times its own in the coverage run (test_limit()). The host's cores
are shared out: each boot (a single-threaded TCG guest) and each build holds one, and as many
mutants are judged at once as there are cores, so that a mutant that boots one mode leaves no
core idle. Results are appended to mutants.jsonl as they come: `--resume DIR` goes on from
there. Mutants start in the order of their ids, a deterministic sample when ``--budget`` ends
the run first; those left are "not run". The marks file (kpatches/<base>/mutant-marks.toml)
marks mutants that cannot change behaviour (equivalent: not counted) and those nothing on this
platform can observe (unobservable here: counted as not detected, naming what would observe
them), each with the reason: they are not run. A mark that names no mutant of the series (its
line changed or vanished) stops the run, named. ``--recheck-marks`` runs every marked mutant as
if unmarked: one that a test now kills loses its mark (the file is written without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from gmemtest.cache import cache_dir, locked
from gmemtest.errors import BuildFailed, BuildStage, GmemtestError
from gmemtest.results import mutation, report, runlog
from gmemtest.results.answer import Answer
from gmemtest.results.coverage import RUN, DrawnPatch
from gmemtest.results.mutation import Result
from gmemtest.results.outcome import Outcome
from gmemtest.results.run import Ended
from gmemtest.vmtier import kernel, mutants, qemu
from gmemtest.vmtier.kernelspec import KernelSpec, Prebuilt
from gmemtest.vmtier.progress import Progress

from . import affected, coverage, vmtest

MARKS = "mutant-marks.toml"  # beside a kpatches/<base>/ series: the marks of its mutants
DETECTED = (mutation.KILLED, mutation.TIMED_OUT)
# Where mutants are made: the series' C changes to KVM.
WITHIN = ("virt/kvm/", "arch/x86/kvm/")
# A mutant's boots: shorter than the main job's, so that a mutant that hangs a test or the
# kernel costs minutes, not half an hour (no test of the suite takes 120 s in the lean build).
LIMITS = qemu.Limits(boot=90, test=120, total=900, silence=90)
# A mutant runs first at most this many of the tests that ran its line, the quickest, in each
# boot: most mutants die there. Only one that survives them runs the rest (a line that every
# test runs, creating a guest_memfd, has a hundred and more).
MOST_TESTS = 40
# The least time limit of a test in a mutant's boot: room for what the test shares with those
# before it in the coverage run (a module's fixtures), and for a noisy machine.
TEST_FLOOR = 12.0
FAILED = (Outcome.FAILED, Outcome.TIMEOUT, Outcome.ERROR)
HUNG = (Ended.BOOT_TIMEOUT, Ended.TIMEOUT, Ended.HANG)


@dataclass
class Candidate:
    """A mutant with where it sits in the series and the tests that can see it: those that
    ran its line (a test that never runs the line cannot tell the mutant from the original)."""

    mutant: mutants.Mutant
    function: str
    patch: int
    subject: str
    line_tests: list[str]  # "mode: node id" that ran the line

    def result(self) -> Result:
        m = self.mutant
        return Result(m.id, m.file, m.line, self.function, self.patch, self.subject,
                      m.operator, m.original, m.mutated, tests=self.line_tests)

    def tests_for(self, mode: str, seconds: dict[str, float] | None = None,
                  slowest: float = coverage.SLOWEST) -> list[str]:
        """The node ids to run in the boot ``mode``, the quickest first (``seconds``: each
        test's in the coverage run; the unknown last, in name order), leaving out those that
        took over ``slowest`` seconds there."""
        took = seconds or {}
        nodes = {node for label, _, node in (t.partition(": ") for t in self.line_tests)
                 if label == mode and took.get(node, 0.0) <= slowest}
        return sorted(nodes, key=lambda n: (took.get(n, float("inf")), n))


def candidates(series: list[DrawnPatch], tree: Path) -> list[Candidate]:
    """Every mutant of the run lines the series adds to KVM's C files, in id order."""
    out: list[Candidate] = []
    seen: dict[str, dict[str, int]] = {}
    texts: dict[str, list[str]] = {}
    defined: dict[str, dict[str, tuple[int, int]]] = {}
    for p in series:
        for ln in p.lines:
            file, tip = ln.file, ln.tip
            if not file.endswith(".c") or not file.startswith(WITHIN) or ln.status != RUN \
                    or tip is None:
                continue
            if file not in texts:
                text = (tree / file).read_text(errors="replace")
                texts[file], defined[file] = text.splitlines(), affected.functions(text)
            if texts[file][tip - 1] != ln.text:
                raise GmemtestError(f"{file}:{tip} is not the line the coverage map drew: the "
                                    "tree changed since; run `gmemtest coverage` on it again")
            fn = next((n for n, (s, e) in defined[file].items() if s <= tip <= e), "?")
            for m in mutants.of_line(file, tip, ln.text, seen.setdefault(file, {}),
                                     around=mutants.context(texts[file], tip)):
                out.append(Candidate(m, fn, p.index, p.subject, list(ln.tests)))
    return sorted(out, key=lambda c: c.mutant.id)


# --- the scratch tree ----------------------------------------------------------------------------

class Scratch:
    """A hard-linked copy of the kernel tree in which one mutant at a time is written. A file is
    replaced, never written through (its link to the original tree is broken first), and put
    back the same way, newer than its mutant's object, so that the next build rebuilds it."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree
        key = hashlib.sha256(str(tree).encode()).hexdigest()[:16]
        self.path = cache_dir("mutate") / key / "linux"
        self.build_dir = self.path / ".gmemtest-build"

    def make(self, progress: Progress) -> None:
        if not (self.path / "Makefile").is_file():
            progress.phase("mutate", f"a scratch copy of {self.tree}")
            tmp = self.path.with_name("linux.partial")
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(self.tree), str(tmp)], check=True)
            for b in tmp.glob(".gmemtest-build*"):  # the tree's own builds stay its own
                subprocess.run(["rm", "-rf", str(b)], check=True)
            tmp.rename(self.path)
        for file in self.path.glob("**/*.gmemtest-mutant"):
            file.unlink()

    def write(self, file: str, lines: list[str]) -> None:
        dest = self.path / file
        tmp = dest.with_name(dest.name + ".gmemtest-mutant")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, dest)

    def restore(self, files: set[str] | None = None) -> None:
        """Each mutated file (or ``files``) back to the tree's text."""
        for file in sorted(files if files is not None else self.changed()):
            self.write(file, (self.tree / file).read_text().splitlines())

    def changed(self) -> set[str]:
        """The files of the copy that differ from the tree (a run stopped mid-mutant)."""
        out = set()
        for prefix in WITHIN:
            for f in (self.path / prefix).rglob("*.c"):
                rel = f.relative_to(self.path)
                orig = self.tree / rel
                if not orig.exists() or os.stat(f).st_ino != os.stat(orig).st_ino and \
                        f.read_bytes() != orig.read_bytes():
                    out.add(str(rel))
        return out


# --- running one mutant --------------------------------------------------------------------

def _killer(boots: list[report.BootReport]) -> tuple[mutation.MutantOutcome, str | None]:
    """(outcome, by): the first boot's failed test or finding, or why none ran."""
    boots = [b for b in boots if b.ended is not Ended.STOPPED]
    for b in boots:
        # The command line is gmemtest's own and held for the original kernel: a mutant
        # whose kernel no longer keeps a promise of its configuration changed what it does.
        if b.ended is Ended.CONTRACT:
            return mutation.KILLED, f"{b.label}: {b.problem}"[:300]
        if b.ended.harness_fault:
            raise GmemtestError(f"a mutant's boot did not run its tests ({b.label}: "
                                f"{b.problem or b.ended}): the harness, not the mutant")
    for b in boots:
        failed = [r for r in b.results if r.outcome in FAILED]
        if failed:
            slow = failed[0].outcome is Outcome.TIMEOUT
            return (mutation.TIMED_OUT if slow else mutation.KILLED), f"{b.label}: {failed[0].name}"
        if b.findings:
            return mutation.KILLED, f"{b.label}: {b.findings[0]}"[:300]
    for b in boots:
        if b.ended in HUNG:
            return mutation.TIMED_OUT, f"{b.label}: {b.ended}"
        if not b.ran:  # a crash, a panic
            return mutation.KILLED, f"{b.label}: {b.problem or b.ended}"[:300]
    return mutation.SURVIVED, None


def test_limit(limits: qemu.Limits, tests: list[str], took: dict[str, float]) -> qemu.Limits:
    """``limits`` with a timeout for each of ``tests`` of three times its own time in the
    coverage run (itself slower than the lean build), at least TEST_FLOOR and at most
    ``limits.test``, which stays the limit of a test not measured there: a mutant that makes
    a quick test's conversion loop forever costs seconds, not minutes."""
    return replace(limits, tests={t: min(limits.test, max(TEST_FLOOR, 3 * took[t]))
                                  for t in tests if t in took})


@dataclass
class Built:
    """A mutant's kernel, its bzImage copied out of the scratch build (which the next mutant's
    build overwrites while this one boots), or why it did not build."""

    build: kernel.Build | None
    why: str | None
    seconds: float


def build_mutant(c: Candidate, spec: KernelSpec, scratch: Scratch, progress: Progress,
                 results: Path) -> Built:
    """Write ``c``'s mutant into the scratch copy, build it incrementally, put the file back."""
    t0 = time.monotonic()
    lines = (scratch.tree / c.mutant.file).read_text().splitlines()
    lines[c.mutant.line - 1] = c.mutant.mutated
    scratch.write(c.mutant.file, lines)
    try:
        build = kernel.resolve(spec, progress)
    except BuildFailed as e:
        if e.stage is not BuildStage.COMPILE:
            raise
        return Built(None, str(e).splitlines()[0][:200], time.monotonic() - t0)
    finally:
        scratch.restore({c.mutant.file})
    results.mkdir(parents=True, exist_ok=True)
    own = results / f"{c.mutant.id}.bzImage"
    shutil.copyfile(build.bzimage, own)
    return Built(replace(build, bzimage=own), None, time.monotonic() - t0)


def run_one(c: Candidate, built: Built, results: Path, limits: qemu.Limits,
            seconds: dict[str, dict[str, float]], extra: tuple[str, ...] = (),
            most: int | None = None, cores: threading.Semaphore | None = None,
            newer: tuple[str, ...] = ()) -> Result:
    """Run ``c``'s tests against its ``built`` mutant: ``extra`` first in every boot, then the
    ``most`` quickest of those that ran its line in the boot. A mutant that all of these let
    through runs the rest of them, and the tests ``newer`` than the coverage map, before it is
    called survived: the cap is for speed, never for a verdict. Each boot holds one of
    ``cores`` (shared with the run's other mutants)."""
    cores = cores or threading.Semaphore(qemu.boots_at_once(2))
    r = c.result()
    t0 = time.monotonic()
    build = built.build
    if build is None:
        r.outcome, r.by = mutation.NOT_BUILT, built.why
        return r
    try:
        labels = [m.label for m in vmtest.modes(build)]
        if not any(c.tests_for(label) for label in labels) and not extra:
            raise GmemtestError(f"{c.mutant.describe()}: no boot of {build.label} has a test "
                                "that ran it (the map's boots are not this kernel's)")
        first, rest = plan(c, labels, seconds, extra, most, slowest_test(limits), newer)
        outcomes = _boots(build, c, first, results, "", limits, seconds, cores)
        if _killer(outcomes)[0] == mutation.SURVIVED and any(rest.values()):
            outcomes += _boots(build, c, rest, results, "-rest", limits, seconds, cores)
    finally:
        build.bzimage.unlink(missing_ok=True)
    r.outcome, r.by = _killer(outcomes)
    r.ran = sum(len(b.results) for b in outcomes)
    r.seconds = round(built.seconds + time.monotonic() - t0, 1)
    return r


def slowest_test(limits: qemu.Limits) -> float:
    """The slowest test (seconds in the coverage run) a mutant runs: one whose three times
    are within the boot's limit, so that a healthy test never ends its mutant 'timed out'
    (the coverage run's time is no bound: the model fuzzer's self-test took 56 s there and
    twice that in a lean boot beside another)."""
    return min(coverage.SLOWEST, limits.test / 3)


def plan(c: Candidate, labels: list[str], seconds: dict[str, dict[str, float]],
         extra: tuple[str, ...], most: int | None,
         slowest: float = coverage.SLOWEST,
         newer: tuple[str, ...] = ()) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The tests of each boot (by label) in the first pass, ``extra`` then the ``most``
    quickest that ran the line (of those up to ``slowest``), and in the second, the rest, then
    the tests ``newer`` than the coverage map (it cannot say whether they run the line)."""
    first: dict[str, list[str]] = {}
    rest: dict[str, list[str]] = {}
    for label in labels:
        line = [t for t in c.tests_for(label, seconds.get(label, {}), slowest)
                if t not in extra]
        quickest = line[:most]
        first[label] = [*extra, *quickest]
        rest[label] = [*line[len(quickest):], *(t for t in newer if t not in extra)]
    return first, rest


def _boots(build: kernel.Build, c: Candidate, tests: dict[str, list[str]], results: Path,
           suffix: str, limits: qemu.Limits, seconds: dict[str, dict[str, float]],
           cores: threading.Semaphore) -> list[report.BootReport]:
    """Boot ``build`` in each mode that has ``tests`` (a mode that never ran the line cannot
    see the mutant), side by side as ``cores`` allow (each boot holds one), each stopping at
    its first failure or kernel report; once one boot has killed the mutant the other stops,
    or never starts."""
    boots = [m for m in vmtest.modes(build) if tests.get(m.label)]
    if not boots:
        return []
    decided = threading.Event()

    def boot(mode: vmtest.Mode) -> report.BootReport | None:
        with cores:
            if decided.is_set():  # killed by the other boot while this one waited for a core
                return None
            took = seconds.get(mode.label, {})
            run = qemu.boot(build, ["-p", "no:xdist", "-x", *tests[mode.label]],
                            results=results / f"{c.mutant.id}-{mode.slug}{suffix}",
                            cmdline=list(mode.cmdline),
                            limits=test_limit(limits, tests[mode.label], took),
                            echo=False, stop=decided, stop_at_report=True)
        rep = report.evaluate(mode.label, run)
        if rep.ended is not Ended.STOPPED and _killer([rep])[0] != mutation.SURVIVED:
            decided.set()
        return rep

    with ThreadPoolExecutor(len(boots)) as pool:
        return [rep for rep in pool.map(boot, boots) if rep is not None]


# --- the run -----------------------------------------------------------------------------------

def the_map(spec: KernelSpec, progress: Progress, out: Path,
            stamp: str) -> tuple[kernel.Build, coverage.CoverageMap]:
    """The lean build of ``spec`` and its tree's coverage map, measured now if there is none."""
    build = kernel.resolve(spec, progress)
    assert build.source_path is not None
    kept = coverage.load_map(build.source_path)
    if kept is None or kept.series is None:
        progress.phase("mutate", "no coverage map of this tree yet: measuring it first "
                       f"(reports in {out / 'coverage'})")
        m = coverage.measure(spec, [], limits=qemu.Limits(), progress=progress, stamp=stamp,
                             root=out / "coverage")
        doc = coverage.write(m, out / "coverage")
        coverage.save_map(m, doc)
        kept = coverage.load_map(build.source_path)
        assert kept is not None
    assert kept.series is not None
    if not kept.series:
        raise GmemtestError(f"{build.label}: no series to mutate (a tree: `gmemtest coverage "
                            "--src TREE --since BASE` names its commits)")
    return build, kept


def _lower_priority() -> None:
    """Make this thread (the builder) and the compilers it starts yield to the boots: a build
    of the next mutant uses what the running mutant's QEMU leaves of the CPUs."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _run_all(runs: list[Candidate], number: dict[str, int], total: int,
             judge: Callable[[Candidate, Built, threading.Semaphore], Result],
             build: Callable[[Candidate], Built], progress: Progress, out: Path,
             deadline: float | None, cores: int = 1) -> dict[str, Result]:
    """Judge ``runs``, as many mutants at a time as there are ``cores``: each of their boots
    holds a core, and so does each build (made in order, ahead of the judging, by one builder
    thread at a lower priority; with one core the build runs beside the boot). No mutant starts
    after ``deadline`` (monotonic): the rest are not run. A mutant's failure to be judged (the
    harness's) ends the run once the mutants being judged are done."""
    free = threading.Semaphore(cores)
    ran: dict[str, Result] = {}
    error: BaseException | None = None

    def build_on_a_core(c: Candidate) -> Built:
        with free if cores > 1 else contextlib.nullcontext():
            return build(c)

    with ThreadPoolExecutor(1, initializer=_lower_priority) as builder, \
            ThreadPoolExecutor(cores) as judges:
        builds: list[Future[Built]] = []
        running: dict[Future[Result], Candidate] = {}
        n = 0
        while True:
            while error is None and n < len(runs) and len(running) < cores and \
                    (deadline is None or time.monotonic() <= deadline):
                while len(builds) < min(len(runs), n + cores + 1):
                    builds.append(builder.submit(build_on_a_core, runs[len(builds)]))
                c = runs[n]
                try:
                    built = builds[n].result()
                except BaseException as e:  # a build the tree, not the mutant, broke
                    error = e
                    break
                n += 1
                progress.phase(f"mutant {number[c.mutant.id]}/{total}", c.mutant.describe())
                running[judges.submit(judge, c, built, free)] = c
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                c = running.pop(f)
                try:
                    r = f.result()
                except BaseException as e:
                    error = error or e
                    continue
                mutation.append(out / "mutants.jsonl", r)
                ran[c.mutant.id] = r
                progress.done(f"mutant {number[c.mutant.id]}/{total}", f"{r.outcome}"
                              + (f" by {r.by}" if r.by else "") + f" ({r.seconds:.0f} s)")
        for ahead in builds[n:]:  # built, never judged: the budget ended first
            if ahead.cancel() or ahead.exception() is not None:
                continue
            left = ahead.result().build
            if left is not None:
                left.bzimage.unlink(missing_ok=True)
    if error is not None:
        raise error
    return {c.mutant.id: ran[c.mutant.id] for c in runs if c.mutant.id in ran}


@dataclass(frozen=True)
class Choice:
    """Which mutants a run takes: the ``first`` N of the order, those of ``ids``, those whose
    earlier outcome is in ``retry`` (with --resume); ``extra`` tests run against each, in
    every boot (a test written to kill a survivor, before the coverage map knows it)."""

    first: int | None = None
    ids: tuple[str, ...] = ()
    retry: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    most: int | None = MOST_TESTS  # the quickest of each boot's tests that ran the line
    recheck: bool = False  # run the marked mutants, as if unmarked
    shard: mutation.Shard | None = None  # this run's part of the mutants

    def scope(self, every: list[Candidate]) -> list[Candidate]:
        """The mutants this run reports on: its shard's part of the order, or all."""
        return self.shard.of(every) if self.shard is not None else every

    def pick(self, every: list[Candidate]) -> list[Candidate]:
        """The mutants this run runs, of ``every`` mutant of the series in order."""
        if self.ids:
            known = {c.mutant.id for c in every}
            unknown = [i for i in self.ids if i not in known]
            if unknown:
                raise GmemtestError(f"--mutant {unknown[0]}: no mutant of this series has "
                                    "that id (mutation.json lists them)")
        todo = self.scope(every)
        if self.ids:
            todo = [c for c in todo if c.mutant.id in self.ids]
        return todo[:self.first] if self.first is not None else todo


def main(spec: KernelSpec, *, limits: qemu.Limits, out: Path | None, budget: float | None,
         resume: Path | None, marks: Path | None, choice: Choice = Choice()) -> Answer:
    if isinstance(spec.source, Prebuilt):
        raise GmemtestError(f"{spec.label()}: a built kernel cannot be mutated: name its "
                            "source (kpatches, --src, --series)")
    if resume is not None and not (resume / "mutants.jsonl").is_file():
        raise GmemtestError(f"--resume {resume}: no mutants.jsonl there (a `gmemtest mutate` "
                            "run's directory)")
    marked = mutation.load_marks(marks)
    if choice.recheck:
        if not marked:
            raise GmemtestError("--recheck-marks: no marks to check"
                                + (f" in {marks}" if marks else " (no marks file)"))
        choice = replace(choice, ids=tuple(sorted(marked)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = resume or out or vmtest.results_root() / f"mutate-{stamp}"
    progress = Progress()
    t0 = time.monotonic()
    with runlog.results_dir(out), contextlib.ExitStack() as stack:
        build, kept = the_map(spec, progress, out, stamp)
        assert build.source_path is not None
        assert kept.series is not None
        every = candidates(kept.series, build.source_path)
        stale = sorted(set(marked) - {c.mutant.id for c in every})
        if stale:
            m = marked[stale[0]]
            raise GmemtestError(
                f"{marks}: {len(stale)} mark(s) name no mutant of this series, first {m.id} "
                f"({m.mutant}): its line changed or vanished (or no test runs it now); mark "
                "the line's mutant again, or drop the mark")
        picked = {c.mutant.id for c in choice.pick(every)}
        recorded = mutation.load_results(out / "mutants.jsonl")
        # What runs: the picked mutants not yet decided (--mutant names one to run again).
        # What the report covers: those, and with --resume every mutant of the series (one
        # neither recorded nor picked is 'not run').
        done = {i: r for i, r in recorded.items()
                if r.outcome not in (mutation.NOT_RUN, *choice.retry) and i not in choice.ids
                or i not in picked}
        todo = choice.scope(every) if resume else [c for c in every if c.mutant.id in picked]
        scratch = Scratch(build.source_path)
        stack.enter_context(locked(scratch.path.parent.with_suffix(".lock")))
        scratch.make(progress)
        scratch.restore()
        mspec = spec.on_tree(scratch.path, scratch.build_dir)
        progress.phase("mutate", f"{len(todo)} mutants of {build.label}"
                       + (f", {len(done)} done before" if done else ""))
        newer = tuple(kept.newer_tests(coverage.suite_tests()))
        if newer:
            progress.phase("mutate", f"{len(newer)} test(s) newer than the coverage map (made "
                           f"{kept.made}): a mutant that the tests that ran its line let "
                           "through runs them too before it is called survived; `gmemtest "
                           "coverage` maps them: " + ", ".join(newer))
        unmarked = set() if choice.recheck else set(marked)
        runs = [c for c in todo if c.mutant.id not in unmarked and c.mutant.id not in done
                and c.mutant.id in picked]
        ran = _run_all(runs, {c.mutant.id: i for i, c in enumerate(todo, 1)}, len(todo),
                       lambda c, built, cores: run_one(c, built, out / "boots", limits,
                                                       kept.seconds, choice.extra,
                                                       choice.most, cores, newer),
                       lambda c: build_mutant(c, mspec, scratch, Progress(quiet=True),
                                              out / "boots"),
                       progress, out, deadline=None if budget is None else t0 + budget * 60,
                       cores=qemu.boots_at_once(os.cpu_count() or 1))
        results: list[Result] = []
        lost: list[tuple[mutation.Mark, Result]] = []
        for c in todo:
            rechecked = ran.get(c.mutant.id) if choice.recheck else None
            if rechecked is not None and rechecked.outcome in DETECTED:
                lost.append((marked[c.mutant.id], rechecked))
                r = rechecked
            elif c.mutant.id in marked:
                r = c.result()
                r.outcome, r.by = marked[c.mutant.id].outcome, marked[c.mutant.id].why()
            else:
                r = done.get(c.mutant.id) or ran.get(c.mutant.id) or c.result()  # or not run
            results.append(r)
        if lost and marks is not None:
            mutation.write_marks(marks, [m for i, m in marked.items()
                                         if i not in {k.id for k, _ in lost}],
                                 mutation.header_of(marks))
            for m, r in lost:
                progress.done("marks", f"{m.id} lost its mark ({m.outcome}): {r.outcome} by "
                              f"{r.by}")
        text, left = write_reports(out, results, build.label, choice.shard)
    if left:
        text += (f"\nmutate: {left} mutants not run within the budget: `gmemtest mutate "
                 f"--resume {out}` goes on")
    text += f"\neach result as it came: {out}/mutants.jsonl"
    return Answer(1 if any(r.outcome == mutation.SURVIVED for r in results) else 0, text)


def write_reports(out: Path, results: list[Result], label: str,
                  shard: mutation.Shard | None = None) -> tuple[str, int]:
    """mutation.json, .md and .html in ``out``; returns the headline and how many mutants
    were not run."""
    not_run = sum(r.outcome == mutation.NOT_RUN for r in results)
    doc = mutation.to_json(results, label, shard=shard, budget_left=not_run)
    out.mkdir(parents=True, exist_ok=True)
    (out / mutation.REPORT).write_text(json.dumps(doc, indent=1) + "\n")
    (out / "mutation.md").write_text(mutation.markdown(doc))
    (out / "mutation.html").write_text(mutation.html_page(doc))
    return (f"{mutation.headline(results, label, shard)}\nreports: {out}/mutation.html, "
            f"mutation.md, {mutation.REPORT}"), not_run


def merge_main(dirs: list[Path], out: Path) -> Answer:
    """`gmemtest mutate merge DIR...`: the reports of a run's shards, run apart, as one run of
    them would write; 1 when a mutant survived."""
    label, results = mutation.merge(dirs)
    text, _ = write_reports(out, results, label)
    return Answer(1 if any(r.outcome == mutation.SURVIVED for r in results) else 0, text)
