"""Mutation testing of a series (gmemtest.vmtier.mutants, gmemtest.workflows.mutate,
gmemtest.results.mutation): the mutants a line gets, where they are written, how a mutant's boots
are judged, and the reports. The real run on kpatches/ is `gmemtest mutate` (docs/coverage.md)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import ci_local
import pytest
from bases import BASE

from gmemtest.errors import GmemtestError
from gmemtest.results import mutation
from gmemtest.results.coverage import DrawnPatch, drawn
from gmemtest.results.health import Finding
from gmemtest.results.outcome import Outcome, TestResult
from gmemtest.results.report import BootReport
from gmemtest.results.run import Ended
from gmemtest.vmtier import kernel, mutants, patchset
from gmemtest.vmtier.kernelspec import Debian, KernelSpec
from gmemtest.vmtier.progress import Progress
from gmemtest.workflows import coverage, mutate

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)


def changes(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for m in mutants.of_line("f.c", 1, text):
        out.setdefault(m.operator, set()).add(m.mutated.strip())
    return out


def test_each_operator_makes_its_mistake():
    assert changes("\tif (a < b)") == {
        "negate": {"if (a >= b)"}, "boundary": {"if (a <= b)"}}
    assert changes("\tif (a && !b)") == {
        "logic": {"if (a || !b)", "if (a && b)"}, "negate": {"if (!(a && !b))"}}
    assert changes("\tend = start + nr - 1;")["boundary"] == {"end = start + nr;"}
    assert changes("\tend = start + nr - 1;")["arith"] == {"end = start - nr - 1;"}
    assert changes("\tend = start + nr - 1;")["store"] == {";"}
    assert changes("\tmask = x & ~y;")["bitwise"] == {"mask = x | ~y;", "mask = x & y;"}
    assert changes("\treturn -EAGAIN;") == {
        "errno": {"return -EINVAL;", "return 0;"}}
    assert changes("\treturn true;") == {"return": {"return false;"}}
    assert changes("\treturn r;") == {"return": {"return 0;"}}
    assert changes("\tkvm_gmem_zap(gmem, start, end);") == {"call": {";"}}
    assert changes("\tnr = 0;")["constant"] == {"nr = 1;"}
    assert changes("\tflags |= 0x4;")["constant"] == {"flags |= 0x5;"}


def test_literals_comments_and_directives_are_left_alone():
    # (a call with a literal is a message: not removed either)
    assert changes('\tpr_info("a < b && c");') == {}
    assert "negate" not in changes("\tx = y; /* a < b */")
    assert changes("#if LINUX_VERSION_CODE < 5") == {}
    assert changes(" * if (a == b) in a comment") == {}
    # a call whose value is kept is not a call statement: removing it is a store's mutant
    assert "call" not in changes("\tr = kvm_gmem_zap(gmem);")


def test_a_mutants_id_survives_its_line_moving():
    a = mutants.of_line("virt/kvm/guest_memfd.c", 10, "\tif (a < b)")
    b = mutants.of_line("virt/kvm/guest_memfd.c", 99, "\tif (a < b)")
    assert [m.id for m in a] == [m.id for m in b]
    assert len({m.id for m in a}) == len(a)
    # the same text twice in a file, in the same context: two mutants, two ids
    seen: dict[str, int] = {}
    twice = mutants.of_line("f.c", 1, "\tif (x)", seen) + mutants.of_line("f.c", 5, "\tif (x)",
                                                                         seen)
    assert len({m.id for m in twice}) == len(twice) == 2


def test_a_mutants_id_stays_with_its_line_when_an_identical_line_comes_before_it():
    """A later patch that adds the same line earlier in the file, elsewhere, does not hand the
    line's id (and so a mark on it) to the new line: the id holds the line's context."""
    def ids(lines: list[str]) -> dict[int, set[str]]:
        seen: dict[str, int] = {}
        return {n: {m.id for m in mutants.of_line("f.c", n, t, seen,
                                                  around=mutants.context(lines, n))}
                for n, t in enumerate(lines, 1) if "return -EINVAL" in t}

    before = ["int a(void)", "{", "\tif (x)", "\t\treturn -EINVAL;", "}"]
    after = ["int b(void)", "{", "\tif (y)", "\t\treturn -EINVAL;", "}", *before]
    assert ids(after)[9] == ids(before)[4]
    assert ids(after)[4].isdisjoint(ids(before)[4])


TIP = """\
static int kvm_gmem_check(struct gmem *g, int nr)
{
\tif (nr < g->max)
\t\treturn -EINVAL;
\treturn 0;
}
"""


def series_doc(tree: Path, tip: str = TIP) -> list[DrawnPatch]:
    (tree / "virt/kvm").mkdir(parents=True)
    (tree / "virt/kvm/gmem.c").write_text(tip)
    on, off = "in-place conversion on", "in-place conversion off (its default)"
    lines = [{"kind": "+", "text": t, "tip": n, "status": s, "tests": tests}
             for n, (t, s, tests) in enumerate([
                 ("static int kvm_gmem_check(struct gmem *g, int nr)", "no code", []),
                 ("{", "no code", []),
                 ("\tif (nr < g->max)", "run", [f"{on}: tests/a.py::t1"]),
                 ("\t\treturn -EINVAL;", "never run", []),
                 ("\treturn 0;", "run", [f"{on}: tests/a.py::t1", f"{off}: tests/b.py::t3"]),
                 ("}", "no code", [])], 1)]
    return drawn({"patches": [{"index": 3, "subject": "KVM: gmem: check nr", "hunks": [
        {"file": "virt/kvm/gmem.c", "header": "", "lines": lines},
        {"file": "include/linux/kvm_host.h", "header": "", "lines": [
            {"kind": "+", "text": "\tif (a < b)", "tip": 1, "status": "run", "tests": ["x"]}]},
    ]}]})


def test_candidates_are_the_run_lines_of_kvms_c_files(tmp_path):
    doc = series_doc(tmp_path)
    found = mutate.candidates(doc, tmp_path)
    # the never-run line 4 and the header get none
    assert {(c.mutant.line, c.mutant.mutated.strip()) for c in found} == {
        (3, "if (nr >= g->max)"), (3, "if (nr <= g->max)"), (5, "return 1;")}
    assert all(c.function == "kvm_gmem_check" and c.patch == 3 for c in found)
    assert [c.mutant.id for c in found] == sorted(c.mutant.id for c in found)
    # the tests that ran the line, in each boot, the quickest first
    c = next(c for c in found if c.mutant.line == 3)
    assert c.tests_for("in-place conversion on") == ["tests/a.py::t1"]
    assert c.tests_for("in-place conversion off (its default)") == []
    c = next(c for c in found if c.mutant.line == 5)
    assert c.tests_for("in-place conversion off (its default)") == ["tests/b.py::t3"]
    c.line_tests += ["in-place conversion on: tests/a.py::t0",
                     "in-place conversion on: tests/z.py"]
    assert c.tests_for("in-place conversion on", {"tests/a.py::t1": 9.0, "tests/a.py::t0": 1.5}
                       ) == ["tests/a.py::t0", "tests/a.py::t1", "tests/z.py"]
    # a test slower than a minute in the coverage run is left out
    assert c.tests_for("in-place conversion on", {"tests/a.py::t1": 132.0}) == [
        "tests/a.py::t0", "tests/z.py"]
    # a map drawn on another text of the tree is refused
    (tmp_path / "virt/kvm/gmem.c").write_text(TIP.replace("nr < g->max", "nr <= g->max"))
    with pytest.raises(GmemtestError, match="run `gmemtest coverage` on it again"):
        mutate.candidates(doc, tmp_path)


def test_a_mutants_tests_get_three_times_their_coverage_run():
    limits = mutate.LIMITS
    own = mutate.test_limit(limits, ["a", "b", "c", "new"], {"a": 2.0, "b": 15.0, "c": 200.0})
    # each its own: three times its time, at least the floor, at most the boot's limit
    assert own.tests == {"a": mutate.TEST_FLOOR, "b": 45.0, "c": limits.test}
    assert own.test == limits.test  # "new", not measured, keeps the boot's limit
    assert own.total == limits.total
    assert own.silence == limits.silence
    # a test whose three times would not fit the boot's limit is not run against mutants (a
    # healthy one would end its mutant 'timed out')
    assert mutate.slowest_test(limits) == limits.test / 3
    c = mutate.Candidate(None, "f", 1, "s", ["on: quick", "on: slow"])
    assert c.tests_for("on", {"quick": 1.0, "slow": 41.0}, mutate.slowest_test(limits)) == \
        ["quick"]


def test_a_run_picks_its_mutants(tmp_path):
    found = mutate.candidates(series_doc(tmp_path), tmp_path)
    assert mutate.Choice(first=2).pick(found) == found[:2]
    one = found[1].mutant.id
    assert mutate.Choice(ids=(one,)).pick(found) == [found[1]]
    with pytest.raises(GmemtestError, match="--mutant 0123: no mutant of this series"):
        mutate.Choice(ids=("0123",)).pick(found)
    # shards: every mutant in exactly one, in the order; each part the same size within one
    parts = [mutate.Choice(shard=mutation.Shard(k, 3)).pick(found) for k in (1, 2, 3)]
    assert sorted((c for p in parts for c in p), key=lambda c: c.mutant.id) == found
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert mutate.Choice(shard=mutation.Shard(2, 3), first=1).pick(found) == [found[1]]
    assert mutate.Choice(shard=mutation.Shard(1, 3), ids=(one,)).pick(found) == []


def test_shards_merge_into_the_one_run(tmp_path, gmemtest_cli):
    """The reports of a run's shards, run apart, merge into the report one run of them writes;
    a shard missing, given twice, or a whole run among them is one line."""
    results = [result(o, n) for n, o in enumerate((mutation.KILLED, mutation.SURVIVED,
                                                   mutation.UNOBSERVABLE, mutation.TIMED_OUT,
                                                   mutation.EQUIVALENT))]
    results.sort(key=lambda r: r.id)
    whole = tmp_path / "whole"
    mutate.write_reports(whole, results, "k")
    for k in (1, 2):
        shard = mutation.Shard(k, 2)
        mutate.write_reports(tmp_path / f"s{k}", shard.of(results), "k", shard)
    proc = gmemtest_cli("mutate", "merge", str(tmp_path / "s2"), str(tmp_path / "s1"), "--out",
                        str(tmp_path / "merged"))
    assert proc.returncode == 1, proc.stderr  # a mutant survived
    for name in ("mutation.json", "mutation.md", "mutation.html"):
        assert (tmp_path / "merged" / name).read_text() == (whole / name).read_text(), name
    for dirs, said in (([tmp_path / "s1"], "shard 2/2 is missing"),
                       ([tmp_path / "s1", tmp_path / "s1", tmp_path / "s2"], "given twice"),
                       ([tmp_path / "s1", whole], "is a whole run, not a shard"),
                       ([tmp_path], "is not a mutation run's directory")):
        proc = gmemtest_cli("mutate", "merge", *map(str, dirs), "--out", str(tmp_path / "x"))
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("gmemtest mutate merge: error: ")
        assert said in proc.stderr


def test_the_scratch_copy_never_writes_through_to_the_tree(tmp_path, monkeypatch):
    monkeypatch.setenv("GMEMTEST_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "linux"
    series_doc(tree)
    (tree / "Makefile").write_text("all:\n")
    (tree / ".gmemtest-build-x").mkdir()
    scratch = mutate.Scratch(tree)
    scratch.make(Progress())
    assert not (scratch.path / ".gmemtest-build-x").exists()
    original = (tree / "virt/kvm/gmem.c").read_text()
    lines = original.splitlines()
    lines[2] = "\tif (nr >= g->max)"
    scratch.write("virt/kvm/gmem.c", lines)
    assert (tree / "virt/kvm/gmem.c").read_text() == original
    assert scratch.changed() == {"virt/kvm/gmem.c"}
    before = os.stat(scratch.path / "virt/kvm/gmem.c").st_mtime_ns
    scratch.restore()
    assert (scratch.path / "virt/kvm/gmem.c").read_text() == original
    assert os.stat(scratch.path / "virt/kvm/gmem.c").st_mtime_ns >= before
    assert scratch.changed() == set()


def boot(label: str, ended: Ended = Ended.TESTS_RAN, outcomes: tuple[Outcome, ...] = (),
         findings: tuple[Finding, ...] = ()) -> BootReport:
    return BootReport(label, None, [TestResult(f"t{i}", o) for i, o in enumerate(outcomes)],
                      list(findings), ended=ended)


def test_a_mutants_boots_judged():
    P, F = Outcome.PASSED, Outcome.FAILED
    assert mutate._killer([boot("on", outcomes=(P, P)), boot("off", outcomes=(P,))]) == (
        mutation.SURVIVED, None)
    assert mutate._killer([boot("on", outcomes=(P, F)), boot("off", outcomes=(P,))]) == (
        mutation.KILLED, "on: t1")
    outcome, by = mutate._killer([boot("on", outcomes=(P,), findings=(
        Finding("WARNING", "WARNING: at virt/kvm/guest_memfd.c:600"),))])
    assert outcome == mutation.KILLED
    assert "WARNING" in by
    assert mutate._killer([boot("on", Ended.HANG), boot("off", outcomes=(P,))])[0] == \
        mutation.TIMED_OUT
    assert mutate._killer([boot("on", Ended.NO_STATUS)])[0] == mutation.KILLED
    # a boot stopped at the kernel's first report: the report kills
    outcome, by = mutate._killer([boot("on", Ended.KERNEL_REPORT, findings=(
        Finding("Oops", "Oops: 0000 [#1] SMP"),))])
    assert outcome == mutation.KILLED
    assert by == "on: Oops: Oops: 0000 [#1] SMP"
    # the boot stopped because the other one had killed it has no say
    assert mutate._killer([boot("on", Ended.STOPPED), boot("off", outcomes=(F,))]) == (
        mutation.KILLED, "off: t0")
    # the harness failing is no verdict on the mutant
    with pytest.raises(GmemtestError, match="the harness, not the mutant"):
        mutate._killer([boot("on", Ended.PYTEST)])


def test_a_survivor_of_the_quickest_tests_runs_the_rest(tmp_path, monkeypatch):
    """Survived is a verdict of every test that ran the line: the cap on tests per boot only
    orders them (a mutant's one killer may be among the slowest)."""
    c = next(c for c in mutate.candidates(series_doc(tmp_path), tmp_path) if c.mutant.line == 5)
    on = "in-place conversion on"
    c.line_tests = [f"{on}: tests/a.py::t{i}" for i in range(5)]
    took = {on: {f"tests/a.py::t{i}": float(5 - i) for i in range(5)}}
    first, rest = mutate.plan(c, [on], took, ("tests/new.py",), 2)
    assert first == {on: ["tests/new.py", "tests/a.py::t4", "tests/a.py::t3"]}
    assert rest == {on: ["tests/a.py::t2", "tests/a.py::t1", "tests/a.py::t0"]}
    assert mutate.plan(c, [on], took, (), None)[1] == {on: []}
    # a test newer than the coverage map comes last: the map cannot say it runs the line
    assert mutate.plan(c, [on], took, (), 2, newer=("tests/b.py::new",))[1] == {
        on: ["tests/a.py::t2", "tests/a.py::t1", "tests/a.py::t0", "tests/b.py::new"]}

    # run_one: the first pass lets the mutant through, the second (the slowest) kills it
    build = type("Build", (), {"label": "k", "bzimage": tmp_path / "bzImage"})()
    built = mutate.Built(build, None, 0.0)
    monkeypatch.setattr(mutate.vmtest, "modes", lambda b: (mutate.vmtest.ON,))
    passes: list[list[str]] = []

    def boots(b, cand, tests, results, suffix, limits, seconds, cores):
        passes.append(tests[on])
        killed = "tests/a.py::t0" in tests[on]
        return [BootReport(on, None, [TestResult(t, Outcome.FAILED if killed and
                                                 t.endswith("t0") else Outcome.PASSED)
                                      for t in tests[on]], [], ended=Ended.TESTS_RAN)]

    monkeypatch.setattr(mutate, "_boots", boots)
    r = mutate.run_one(c, built, tmp_path, mutate.LIMITS, took, most=2)
    assert passes == [["tests/a.py::t4", "tests/a.py::t3"],
                      ["tests/a.py::t2", "tests/a.py::t1", "tests/a.py::t0"]]
    assert (r.outcome, r.by, r.ran) == (mutation.KILLED, f"{on}: tests/a.py::t0", 5)
    # killed in the first pass: no second
    passes.clear()
    r = mutate.run_one(c, built, tmp_path, mutate.LIMITS, took, most=None)
    assert len(passes) == 1
    assert r.outcome == mutation.KILLED
    # every test that ran the line lets it through; the test newer than the map kills it
    c.line_tests = [f"{on}: tests/a.py::t{i}" for i in range(1, 5)]
    passes.clear()
    r = mutate.run_one(c, built, tmp_path, mutate.LIMITS, took, most=2,
                       newer=("tests/a.py::t0",))
    assert passes[-1] == ["tests/a.py::t2", "tests/a.py::t1", "tests/a.py::t0"]
    assert (r.outcome, r.by) == (mutation.KILLED, f"{on}: tests/a.py::t0")


def test_tests_newer_than_the_coverage_map():
    """The suite's test functions the coverage run never saw, of the files whose tests ran a
    line of the series: those of the harness's own files could not see a mutant."""
    line = {"tip": 3, "kind": "+", "status": "run", "text": "x",
            "tests": ["in-place conversion on: tests/test_conversion.py::test_old"]}
    kept = coverage.CoverageMap(
        Path("/t"), "k", "2026-12-07T00:00:00Z", {},
        drawn({"patches": [{"index": 1, "subject": "s",
                            "hunks": [{"file": "virt/kvm/x.c", "lines": [line]}]}]}),
        {"in-place conversion on": {"tests/test_conversion.py::test_old": 1.0,
                                    "tests/test_plugin.py::test_old": 1.0}})
    suite = ["tests/test_conversion.py::test_old", "tests/test_conversion.py::test_new[a]",
             "tests/test_conversion.py::test_new[b]", "tests/test_plugin.py::test_old",
             "tests/test_plugin.py::test_new"]
    # By function: its parameters in the guest may not be the host's (the tree's selftests)
    assert kept.newer_tests(suite) == ["tests/test_conversion.py::test_new"]
    # a function the map saw with parameters the host does not have is not new
    assert kept.newer_tests(["tests/test_conversion.py::test_old[none-listed]"]) == []
    assert replace(kept, series=None).newer_tests(suite) == []


def test_the_next_mutant_builds_while_this_one_boots(tmp_path):
    """Mutants are judged in order; the build of each next one starts before the one before is
    judged, in one builder thread at a lower priority; once the budget's deadline has passed
    no mutant starts, and a build made ahead for one that will not run leaves no bzImage."""
    found = mutate.candidates(series_doc(tmp_path), tmp_path)[:3]
    events: list[str] = []
    nice: list[int] = []

    def build(c):
        events.append(f"build {c.mutant.id}")
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        image = tmp_path / f"{c.mutant.id}.bzImage"
        image.write_text("")
        return mutate.Built(type("Build", (), {"bzimage": image})(), None, 0.0)

    def judge(c, built, cores):
        time.sleep(0.2)  # boots: the next build starts meanwhile
        events.append(f"judge {c.mutant.id}")
        built.build.bzimage.unlink()
        r = c.result()
        r.outcome = mutation.KILLED
        return r

    number = {c.mutant.id: i for i, c in enumerate(found, 1)}
    ran = mutate._run_all(found, number, 3, judge, build, Progress(quiet=True), tmp_path, None)
    ids = [c.mutant.id for c in found]
    assert list(ran) == ids
    assert events.index(f"build {ids[1]}") < events.index(f"judge {ids[0]}")
    assert min(nice) >= 10, "the builds did not yield to the boots"
    assert len((tmp_path / "mutants.jsonl").read_text().splitlines()) == 3
    # past the deadline before the first: none judged, the one built ahead is cleaned up
    events.clear()
    ran = mutate._run_all(found, number, 3, judge, build, Progress(quiet=True), tmp_path / "b",
                          time.monotonic() - 1)
    assert ran == {}
    assert events == []
    assert list(tmp_path.glob("*.bzImage")) == []


def test_mutants_share_the_cores(tmp_path):
    """With two cores two mutants are judged at once; each boot, and each build, holds a core,
    so never more than two of them run; the results come back in the mutants' order; a
    mutant the harness failed to judge ends the run, after those being judged."""
    found = mutate.candidates(series_doc(tmp_path), tmp_path)[:5]
    busy: list[str] = []
    most: list[int] = []
    judged_beside: list[bool] = []
    lock = threading.Lock()

    def hold(what: str, seconds: float) -> None:
        with lock:
            busy.append(what)
            most.append(len(busy))
        time.sleep(seconds)
        with lock:
            busy.remove(what)

    def build(c):
        hold(f"build {c.mutant.id}", 0.05)
        image = tmp_path / f"{c.mutant.id}.bzImage"
        image.write_text("")
        return mutate.Built(type("Build", (), {"bzimage": image})(), None, 0.0)

    def judge(c, built, cores):
        for mode in ("on", "off"):
            with cores:
                hold(f"boot {c.mutant.id} {mode}", 0.2)
                judged_beside.append(any(b.startswith("boot") and c.mutant.id not in b
                                         for b in busy))
        built.build.bzimage.unlink()
        r = c.result()
        r.outcome = mutation.KILLED
        return r

    number = {c.mutant.id: i for i, c in enumerate(found, 1)}
    ran = mutate._run_all(found, number, 5, judge, build, Progress(quiet=True), tmp_path, None,
                          cores=2)
    assert list(ran) == [c.mutant.id for c in found]
    assert max(most) == 2, "more than two boots and builds ran at once on two cores"
    assert any(judged_beside), "no two mutants were judged at once"
    assert list(tmp_path.glob("*.bzImage")) == []

    def broken(c, built, cores):
        built.build.bzimage.unlink()
        if c.mutant.id == found[1].mutant.id:
            raise GmemtestError("a mutant's boot did not run its tests")
        r = c.result()
        r.outcome = mutation.KILLED
        return r

    (tmp_path / "c").mkdir()
    with pytest.raises(GmemtestError, match="did not run its tests"):
        mutate._run_all(found, number, 5, broken, build, Progress(quiet=True), tmp_path / "c",
                        None, cores=2)
    assert len((tmp_path / "c" / "mutants.jsonl").read_text().splitlines()) < 5
    assert list(tmp_path.glob("*.bzImage")) == []


def test_a_boot_waiting_for_a_core_is_not_made_once_the_other_killed(tmp_path, monkeypatch):
    """Of a mutant's two boots, one that gets a core only after the other has killed the
    mutant never boots."""
    c = mutate.candidates(series_doc(tmp_path), tmp_path)[0]
    booted: list[str] = []

    def boot(build, args, *, results, **kw):
        booted.append(results.name)
        time.sleep(0.2)
        return results.name

    monkeypatch.setattr(mutate.qemu, "boot", boot)
    monkeypatch.setattr(mutate.vmtest, "modes", lambda b: (mutate.vmtest.ON, mutate.vmtest.OFF))
    monkeypatch.setattr(mutate.report, "evaluate", lambda label, run: BootReport(
        label, None, [TestResult("t0", Outcome.FAILED)], [], ended=Ended.TESTS_RAN))
    build = type("Build", (), {"label": "k", "bzimage": tmp_path / "bzImage"})()
    tests = {m.label: ["tests/a.py::t0"] for m in (mutate.vmtest.ON, mutate.vmtest.OFF)}
    out = mutate._boots(build, c, tests, tmp_path, "", mutate.LIMITS, {},
                        threading.Semaphore(1))
    assert len(booted) == 1
    assert [b.label for b in out] == [mutate.vmtest.ON.label]
    booted.clear()
    mutate._boots(build, c, tests, tmp_path, "", mutate.LIMITS, {}, threading.Semaphore(2))
    assert len(booted) == 2, "with a core each, the two boots run side by side"




def result(outcome: str, n: int = 0, patch: int = 1) -> mutation.Result:
    return mutation.Result(f"id{outcome[:3]}{n}", "virt/kvm/gmem.c", 3, "kvm_gmem_check", patch,
                           "KVM: gmem: check nr", "negate", "\tif (a < b)", "\tif (a >= b)",
                           outcome, "on: t1" if outcome == mutation.KILLED else None,
                           ["in-place conversion on: tests/a.py::t1"])


def test_scores_and_reports(tmp_path):
    results = [result(mutation.KILLED, 1), result(mutation.KILLED, 2),
               result(mutation.TIMED_OUT), result(mutation.SURVIVED, patch=2),
               result(mutation.NOT_BUILT), result(mutation.EQUIVALENT)]
    assert mutation.score(results) == (3, 4, "75.0%")
    doc = mutation.to_json(results, "kernel")
    assert doc["patches"]["1"]["score"] == "100.0%"
    assert doc["patches"]["2"]["score"] == "0.0%"
    md = mutation.markdown(doc)
    assert "**3 of 4 detected (75.0%)**" in md
    assert "-\tif (a < b)" in md
    page = mutation.html_page(doc)
    assert "Survivors (1)" in page
    assert "tests/a.py::t1" in page
    path = tmp_path / "mutants.jsonl"
    for r in results:
        mutation.append(path, r)
    assert mutation.load_results(path) == {r.id: r for r in results}
    path.write_text(path.read_text() + '{"id": 1}\n')
    with pytest.raises(GmemtestError, match="mutants.jsonl:7: not a mutant's result"):
        mutation.load_results(path)


def test_the_marks_file(tmp_path):
    path = tmp_path / "marks.toml"
    path.write_text('# ours\n[[equivalent]]\nid = "abc"\nmutant = "x"\nreason = "same code"\n\n'
                    '[[unobservable]]\nid = "def"\nmutant = "y"\nreason = "filter"\n'
                    'observable_on = "TDX"\n')
    marks = mutation.load_marks(path)
    assert marks == {"abc": mutation.Mark("abc", mutation.EQUIVALENT, "x", "same code"),
                     "def": mutation.Mark("def", mutation.UNOBSERVABLE, "y", "filter", "TDX")}
    mutation.write_marks(path, list(marks.values()), mutation.header_of(path))
    assert mutation.load_marks(path) == marks
    assert path.read_text().startswith("# ours\n")
    for text in ('[[equivalent]]\nid = "abc"\nmutant = "x"\n', "x = 1\n", "[[equivalent\n",
                 '[[equivalent]]\nid = "abc"\nmutant = "x"\nreason = ""\n',
                 '[[unobservable]]\nid = "abc"\nmutant = "x"\nreason = "r"\n',
                 '[[equivalent]]\nid = "a"\nmutant = "x"\nreason = "r"\n[[equivalent]]\n'
                 'id = "a"\nmutant = "y"\nreason = "r"\n'):
        path.write_text(text)
        with pytest.raises(GmemtestError, match=str(path)):
            mutation.load_marks(path)
    # the project's own files are well formed, and each id is of kpatches/' mutants' form
    for base in patchset.bases():
        own = mutation.load_marks(patchset.kpatches(base).series_file.parent / mutate.MARKS)
        assert own
        assert all(len(i) == 12 and int(i, 16) >= 0 for i in own)
        assert all(m.observable_on for m in own.values() if m.outcome == mutation.UNOBSERVABLE)


def test_unobservable_mutants_count_against_the_score():
    """A mutant nothing here can observe is a gap in the score, not a mutant left out."""
    results = [result(mutation.KILLED), result(mutation.UNOBSERVABLE, 1),
               result(mutation.EQUIVALENT, 2)]
    assert mutation.score(results) == (1, 2, "50.0%")
    page = mutation.markdown(mutation.to_json(results, "k"))
    assert "## Unobservable here (1)" in page
    assert "## Equivalent (1)" in page


def test_command_line_mistakes_are_one_line(gmemtest_cli, tmp_path):
    for args, said in [
        (["mutate", "--budget", "soon"], "'soon': a number of minutes above 0"),
        (["mutate", "--first", "0"], "a whole number above 0"),
        (["mutate", "--resume", str(tmp_path)], "no mutants.jsonl there"),
        (["mutate", "--marks", str(tmp_path / "none.toml")], "no such file"),
        (["mutate", "--recheck-marks", "--first", "3"], "--recheck-marks runs every marked"),
        (["mutate", "--retry", "survived"], "it needs --resume DIR"),
        (["mutate", "--", "-k", "x"], "not pytest options (-k)"),
    ]:
        proc = gmemtest_cli(*args, env={**os.environ, "GMEMTEST_CACHE": str(tmp_path / "c")})
        assert proc.returncode == 2, (args, proc.stderr)
        assert said in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


@pytest.mark.timeout(3600)
@pytest.mark.needs("linux_source", "gitlab_ci_local")
def test_the_sharded_mutation_pipeline_runs_here_as_one_run(tmp_path, gmemtest_cli):
    """gitlab-ci-local runs .gitlab-ci.yml's mutate-cell (parallel: 2, each shard's first two
    mutants) and mutate-merge on kpatches/: the merged report gives each of the first four
    mutants the verdict one run of them gives (detected: killed or timed out, which a loaded
    machine can turn into each other; or not), and every other mutant not run."""
    tree = kernel.prepare(KernelSpec(Debian(BASE), patchset.kpatches(BASE)), Progress())
    if not coverage.map_path(tree).is_file():
        pytest.skip(f"needs the coverage map of kpatches/{BASE} (`gmemtest coverage` makes it, "
                    "as a first `gmemtest mutate` does: minutes of boots this test does not add)")
    one = tmp_path / "one"
    proc = gmemtest_cli("mutate", "--first", "4", "--out", str(one), timeout=3000)
    assert proc.returncode in (0, 1), proc.stderr
    repo = ci_local.checkout_copy(tmp_path / "repo")
    proc = ci_local.run(repo, {"MATRIX": "matrices/nightly.toml", "MUTATE_ARGS": "--first 2"},
                        ("mutate-merge",), timeout=3000)
    for job in ("mutate-cell: [1/2]", "mutate-cell: [2/2]", "mutate-merge"):
        assert re.search(rf"(PASS|FAIL)\s+{re.escape(job)}", proc.stdout), job
    alone = {r["id"]: r["outcome"] for r in
             json.loads((one / "mutation.json").read_text())["results"]}
    merged = {r["id"]: r["outcome"] for r in
              json.loads((repo / "mutate-report/mutation.json").read_text())["results"]}
    def verdict(outcome: str) -> str:
        return "detected" if outcome in mutate.DETECTED else outcome

    assert len([o for o in alone.values() if o != mutation.NOT_RUN]) == 4
    assert {i: verdict(o) for i, o in merged.items()} == \
        {i: verdict(o) for i, o in alone.items()}
