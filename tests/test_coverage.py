"""Coverage of a series and the affected-tests selection, on small real inputs: a C program
built with gcc's gcov instrumentation and laid out as a coverage boot keeps it, git
repositories holding a series, and the documents and reports made from them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gmemtest.errors import GmemtestError
from gmemtest.results import baseline, coverage
from gmemtest.vmtier import patchlines
from gmemtest.workflows import affected
from gmemtest.workflows import coverage as workflow

pytestmark = pytest.mark.host_only

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]

# A file in kernel style: two functions, an #ifdef'd one, a comment, a declaration.
SOURCE = """\
#include "x.h"

/* how many there are */
static int total;

static int add(int a, int b)
{
\tif (a < 0)
\t\treturn -1;
\ttotal += a + b;
\treturn total;
}

#ifdef CONFIG_SNP
static int snp_only(int a)
{
\treturn a * 2;
}
#endif

int main(int argc, char **argv)
{
\tadd(argc, 1);
\treturn 0;
}
"""
LINE = {text.strip(): n for n, text in enumerate(SOURCE.splitlines(), 1) if text.strip()}


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def series_repo(tmp_path: Path) -> Path:
    """A repository: a base commit, patch 1 adding add() and snp_only() and main(), patch 2
    changing one line patch 1 added."""
    repo = tmp_path / "tree"
    (repo / "virt/kvm").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "virt/kvm/x.h").write_text("")
    (repo / "virt/kvm/x.c").write_text('#include "x.h"\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "virt/kvm/x.c").write_text(SOURCE.replace("\ttotal += a + b;", "\ttotal += a;"))
    git(repo, "commit", "-q", "-am", "x: add add() and main()")
    (repo / "virt/kvm/x.c").write_text(SOURCE)
    git(repo, "commit", "-q", "-am", "x: add both")
    return repo


@pytest.fixture
def measured(tmp_path):
    """The series repository built with gcov as Kbuild would (a build directory beside the
    source, a .cmd file per object), run once as a coverage boot keeps it: the counters of
    test 1 under gcov/1/<the build directory's absolute path>/, an index naming the test."""
    if shutil.which("gcov") is None:
        pytest.skip("gcov (Debian's gcc) absent")
    repo = series_repo(tmp_path)
    build = repo / ".build"
    (build / "virt/kvm").mkdir(parents=True)
    compile_cmd = ("gcc -O0 -fprofile-arcs -ftest-coverage -I ../virt/kvm -c -o "
                   "virt/kvm/x.o ../virt/kvm/x.c")
    (build / "virt/kvm/.x.o.cmd").write_text(f"savedcmd_virt/kvm/x.o := {compile_cmd}\n")
    subprocess.run(compile_cmd, shell=True, cwd=build, check=True)
    subprocess.run("gcc --coverage -o prog virt/kvm/x.o", shell=True, cwd=build, check=True)
    subprocess.run(["./prog"], cwd=build, check=True)
    results = tmp_path / "boot"
    kept = results / "gcov/1" / str(build.resolve()).lstrip("/") / "virt/kvm/x.gcda"
    kept.parent.mkdir(parents=True)
    shutil.move(build / "virt/kvm/x.gcda", kept)
    (results / "gcov/index.jsonl").write_text(
        json.dumps({"n": 1, "test": "tests/test_x.py::test_add"}) + "\n")
    cov = coverage.read(build, repo, ["virt/kvm/x.c"], [("on", results)])
    cov.files["virt/kvm/x.c"].excluded = coverage.excluded_lines(build, repo, "virt/kvm/x.c")
    return repo, build, cov


def test_lines_run_by_a_test_and_lines_that_are_not(measured):
    """gcov's counts land on the source lines: add()'s body ran (by the test the index
    names), its early return did not; the #ifdef'd function is 'not compiled', its comment
    and the declaration are 'no code'."""
    _, _, cov = measured
    fc = cov.files["virt/kvm/x.c"]
    assert fc.status(LINE["total += a + b;"]) == coverage.RUN
    assert fc.tests[LINE["total += a + b;"]] == {"on: tests/test_x.py::test_add"}
    assert fc.status(LINE["return -1;"]) == coverage.NEVER
    assert fc.status(LINE["return a * 2;"]) == coverage.NOT_COMPILED
    assert fc.status(LINE["static int snp_only(int a)"]) == coverage.NOT_COMPILED
    assert fc.status(LINE["/* how many there are */"]) == coverage.NO_CODE
    assert fc.status(LINE["#ifdef CONFIG_SNP"]) == coverage.NO_CODE
    assert set(fc.functions) == {"add", "main"}
    assert cov.tests_of_function("virt/kvm/x.c", "add") == {"on: tests/test_x.py::test_add"}
    assert cov.boots == {"on": 1}


def test_the_series_drawn_patch_by_patch(measured):
    """Each added line gets the status of the line it became at the tip; the line patch 2
    replaced is 'changed later' in patch 1 and run in patch 2."""
    repo, _, cov = measured
    patches = patchlines.lines(repo, 2)
    assert [p.subject for p in patches] == ["x: add add() and main()", "x: add both"]
    doc = coverage.to_json(cov, patches, "test kernel")
    one, two = doc["patches"]
    added = {ln["text"].strip(): ln for h in one["hunks"] for ln in h["lines"]
             if ln["kind"] == "+"}
    assert added["total += a;"]["status"] == coverage.SUPERSEDED
    assert added["return -1;"]["status"] == coverage.NEVER
    assert added["add(argc, 1);"]["tests"] == ["on: tests/test_x.py::test_add"]
    assert (two["run"], two["never"], two["superseded"]) == (1, 0, 0)
    head = doc["headline"]
    assert head["run"] == one["run"] + two["run"]
    assert head["never"] == one["never"] == 1
    assert head["not_compiled"] == 4  # snp_only()'s definition line, brace, body, brace


def test_reports(measured, tmp_path):
    """Markdown names the never-run and not-compiled lines; the HTML page marks every added
    line with its status and lists the tests of a run line; the lcov tracefile is what
    genhtml reads."""
    repo, _, cov = measured
    doc = coverage.to_json(cov, patchlines.lines(repo, 2), "test kernel")
    md = coverage.markdown(doc)
    assert f"`virt/kvm/x.c:{LINE['return -1;']}` never run" in md
    assert f"`virt/kvm/x.c:{LINE['return a * 2;']}` not compiled" in md
    page = coverage.html_page(doc)
    assert "class='never'" in page
    assert "class='notcompiled'" in page
    assert "<span class='tests'>on: tests/test_x.py::test_add</span>" in page
    info = coverage.lcov(cov, repo)
    assert f"SF:{repo}/virt/kvm/x.c" in info
    assert f"DA:{LINE['return -1;']},0" in info
    assert "FN:" in info
    assert info.rstrip().endswith("end_of_record")
    if shutil.which("genhtml") is None:
        pytest.skip("genhtml (lcov; scripts/bootstrap --vm installs it)")
    (tmp_path / "x.info").write_text(info)
    proc = subprocess.run(["genhtml", "-q", "-o", str(tmp_path / "html"),
                           str(tmp_path / "x.info")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "html/index.html").is_file()


def doc_with(statuses: list[str], tests: list[list[str]] | None = None,
             boot: str = "on") -> dict:
    lines = [{"kind": "+", "text": f"line {i}", "tip": i + 1, "status": s,
              "tests": (tests or [[]] * len(statuses))[i]} for i, s in enumerate(statuses)]
    lines.append({"kind": "+", "text": "line 0", "tip": 99, "status": statuses[0],
                  "tests": []})
    return {"kernel": "k", "boots": {boot: 1},
            "headline": {"within": ["virt/kvm/"], "run": 0, "never": 0, "no_code": 0,
                         "not_compiled": 0, "superseded": 0, "percent": "-"},
            "patches": [{"index": 1, "subject": "s", "commit": "c", "run": 0, "never": 0,
                         "no_code": 0, "not_compiled": 0, "superseded": 0,
                         "hunks": [{"file": "virt/kvm/x.c", "header": "@@ -1 +1 @@",
                                    "lines": lines}]}]}


def test_combining_the_modes_boots():
    """A line is run where either mode ran it, with both modes' tests; the headline counts
    again."""
    on = doc_with([coverage.RUN, coverage.NEVER, coverage.NEVER], [["on: t1"], [], []])
    off = doc_with([coverage.NEVER, coverage.RUN, coverage.NEVER], [[], ["off: t2"], []],
                   "off")
    both = coverage.combine([on, off])
    lines = both["patches"][0]["hunks"][0]["lines"]
    assert [ln["status"] for ln in lines[:3]] == [coverage.RUN, coverage.RUN, coverage.NEVER]
    assert lines[1]["tests"] == ["off: t2"]
    assert both["boots"] == {"on": 1, "off": 1}
    assert both["headline"]["run"] == 3
    assert both["headline"]["never"] == 1
    assert both["headline"]["percent"] == "75.0%"
    with pytest.raises(GmemtestError):
        coverage.combine([])


def test_line_keys_survive_lines_moving():
    """Lines are compared across runs by file and text (the n-th of the same text numbered),
    not by line number."""
    doc = doc_with([coverage.RUN, coverage.NEVER])
    assert coverage.line_keys(doc) == {"virt/kvm/x.c: line 0", "virt/kvm/x.c: line 0 #2"}
    moved = json.loads(json.dumps(doc))
    for ln in moved["patches"][0]["hunks"][0]["lines"]:
        ln["tip"] += 10
    assert coverage.line_keys(moved) == coverage.line_keys(doc)


def test_baseline_names_lines_no_longer_run():
    old = {"cells": {}, "coverage": {"k/coverage": {"headline": {}, "run": ["f: a", "f: b"]}}}
    new = {"cells": {}, "coverage": {"k/coverage": {"headline": {}, "run": ["f: a", "f: c"]}}}
    assert baseline.regressions(new, old) == ["k/coverage: no longer run: f: b"]
    assert baseline.regressions({"cells": {}}, old) == \
        ["k/coverage: coverage not measured in this run"]


# --- the affected tests of an edit --------------------------------------------------------

def test_functions_in_kernel_style():
    found = affected.functions(SOURCE)
    assert found["add"] == (LINE["static int add(int a, int b)"], LINE["return total;"] + 1)
    assert set(found) == {"add", "snp_only", "main"}
    multi = "static long\nfoo(struct kvm *kvm,\n    int x)\n{\n\treturn x;\n}\n"
    assert affected.functions(multi) == {"foo": (1, 6)}


def write_map(tree: Path, functions: dict, seconds: dict | None = None) -> None:
    path = workflow.map_path(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tree": str(tree), "label": "t", "made": "now",
                                "functions": functions, "seconds": seconds or {}}))


@pytest.fixture
def edited(tmp_path, monkeypatch):
    """A series tree with a coverage map: add() ran by two tests (one in each mode), main()
    by one, snp_only() by none."""
    monkeypatch.setenv("GMEMTEST_CACHE", str(tmp_path / "cache"))
    repo = series_repo(tmp_path)
    write_map(repo, {"virt/kvm/x.c": {
        "add": ["on: tests/test_a.py::test_add", "off: tests/test_a.py::test_add",
                "off: tests/test_b.py::test_b[x]"],
        "main": ["on: tests/test_m.py::test_main"], "snp_only": []}})
    yield repo
    workflow.map_path(repo).unlink()


def edit(repo: Path, old: str, new: str) -> None:
    path = repo / "virt/kvm/x.c"
    path.write_text(path.read_text().replace(old, new, 1))


def test_an_edit_inside_covered_functions_picks_their_tests(edited):
    edit(edited, "\ttotal += a + b;", "\ttotal += b + a;")
    sel = affected.select(edited, "HEAD")
    assert sel.whole is None
    assert sel.tests == ["tests/test_a.py::test_add", "tests/test_b.py::test_b[x]"]
    assert sel.why == {"add": 2}
    edit(edited, "\tadd(argc, 1);", "\tadd(argc, 2);")
    sel = affected.select(edited, "HEAD")
    assert sel.why == {"add": 2, "main": 1}
    assert len(sel.tests) == 3
    assert "add (2 tests)" in sel.describe()


def test_tests_slower_than_a_minute_are_left_out_and_named(edited):
    """A covering test that took over a minute in either boot of the coverage run is left
    out of the quick loop and named; when only slow tests cover the edit, they run."""
    functions = json.loads(workflow.map_path(edited).read_text())["functions"]
    write_map(edited, functions, {"on": {"tests/test_a.py::test_add": 2.0},
                                  "off": {"tests/test_b.py::test_b[x]": 61.5,
                                          "tests/test_m.py::test_main": 90.0}})
    edit(edited, "\ttotal += a + b;", "\ttotal += b + a;")
    sel = affected.select(edited, "HEAD")
    assert sel.tests == ["tests/test_a.py::test_add"]
    assert sel.slow == ["tests/test_b.py::test_b[x]"]
    assert "left out, over 60 s each in the coverage run: tests/test_b.py::test_b[x]" \
        in sel.describe()
    edit(edited, "\tadd(argc, 1);", "\tadd(argc, 2);")
    sel = affected.select(edited, "HEAD")
    assert sel.why == {"add": 2, "main": 1}
    assert sel.tests == ["tests/test_a.py::test_add"]
    assert sel.slow == ["tests/test_b.py::test_b[x]", "tests/test_m.py::test_main"]
    edit(edited, "\ttotal += b + a;", "\ttotal += a + b;")
    write_map(edited, {"virt/kvm/x.c": {"main": ["on: tests/test_m.py::test_main"]}},
              {"on": {"tests/test_m.py::test_main": 90.0}})
    sel = affected.select(edited, "HEAD")
    assert sel.tests == ["tests/test_m.py::test_main"]
    assert sel.slow == []


@pytest.mark.parametrize("old, new, why", [
    ("static int total;", "static int total = 1;", "outside every function"),
    ("\treturn a * 2;", "\treturn a * 3;", "snp_only() in virt/kvm/x.c is a function no test"),
])
def test_an_edit_outside_covered_functions_runs_the_whole_suite(edited, old, new, why):
    edit(edited, old, new)
    sel = affected.select(edited, "HEAD")
    assert sel.whole is not None
    assert why in sel.whole
    assert sel.tests == []


def test_no_edit_and_no_map(edited, tmp_path):
    assert "does not differ from HEAD" in affected.select(edited, "HEAD").whole
    with pytest.raises(GmemtestError, match="no such|unknown revision|bad revision"):
        affected.select(edited, "no-such-rev")
    other = series_repo(tmp_path / "other")
    with pytest.raises(GmemtestError, match=f"no coverage map of {other}: run `gmemtest "
                       f"coverage --src {other}` first"):
        affected.select(other, "HEAD")


def test_since_is_checked(tmp_path):
    repo = series_repo(tmp_path)
    assert patchlines.check_since(repo, "HEAD~2") == git(repo, "rev-parse", "HEAD~2").strip()
    assert patchlines.count_since(repo, "HEAD~2") == 2
    with pytest.raises(GmemtestError, match="no such commit"):
        patchlines.check_since(repo, "nope")
    tip = git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    git(repo, "checkout", "-q", "-b", "side", "HEAD~1")
    (repo / "y").write_text("y")
    git(repo, "add", "y")
    git(repo, "commit", "-q", "-m", "side")
    with pytest.raises(GmemtestError, match="not an ancestor"):
        patchlines.check_since(repo, tip)
    with pytest.raises(GmemtestError, match="not a git repository"):
        patchlines.check_since(tmp_path, "HEAD")


def test_command_line_mistakes_are_one_line(gmemtest_cli, tmp_path):
    repo = series_repo(tmp_path)
    for args, said in [
        (["coverage", "--since", "HEAD~1"], "--since REV names the base of a --src tree"),
        (["coverage", "--src", str(repo), "--since", "nope"], "--since nope: no such commit"),
        (["vm-test", "--coverage", "--affected", "HEAD"], "give one of them"),
        (["vm-test", "--affected", "HEAD"], "--affected BASE needs --src TREE alone"),
    ]:
        proc = gmemtest_cli(*args, env={**os.environ, "GMEMTEST_CACHE": str(tmp_path / "c")})
        assert proc.returncode == 2, (args, proc.stderr)
        assert said in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_a_map_serves_a_tree_with_the_same_files(edited, tmp_path):
    """The same series applied as commits elsewhere shares the map; once a measured file
    differs, it does not."""
    same = tmp_path / "same"
    shutil.copytree(edited, same)
    assert workflow.adopt_map(edited, same)
    assert workflow.load_map(same).functions == workflow.load_map(edited).functions
    assert workflow.load_map(same).tree == same
    assert not workflow.adopt_map(edited, same)  # it has one now
    differs = tmp_path / "differs"
    shutil.copytree(edited, differs)
    (differs / "virt/kvm/x.c").write_text("int x;\n")
    assert not workflow.adopt_map(edited, differs)
    assert workflow.load_map(differs) is None
