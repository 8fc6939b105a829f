"""`gmemtest matrix`: the nightly job's cells, reports and baseline comparison."""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import ci_local
import kcidb_io
import pytest
import yaml

from gmemtest.errors import BuildStage, GmemtestError
from gmemtest.results import baseline, cells, contract, kcidb, ktap, report
from gmemtest.results.cells import CellResult, cell_id, slug
from gmemtest.results.contract import BootKind
from gmemtest.results.outcome import Outcome, TestResult
from gmemtest.results.run import Run
from gmemtest.vmtier import kconfig, kernel, patchset
from gmemtest.vmtier.progress import Progress
from gmemtest.workflows import matrix

CHECKOUT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.host_only
ON, OFF = "applied/default/on", "applied/default/off"
COV_ON, COV_OFF = "applied/coverage/on", "applied/coverage/off"
NIGHTLY = ["applied/default/on", "applied/default/off", "applied/debug/on", "applied/debug/off",
           "applied/novmattr/default", COV_ON, COV_OFF, "v8/default/on", "v8/default/off",
           "applied-7.2/default/on", "applied-7.2/default/off"]
# A line the baseline's coverage run ran and no run can: named as no longer run.
GONE = "virt/kvm/guest_memfd.c: a line of an older series"
UNMAPS = "tests.test_conversion::test_conversion_unmaps_every_process"
ENOTTY = "tests.test_conversion::test_gmem_ioctl_is_enotty_when_switched_off"
SEPARATE = "tests.test_conversion::test_private_and_shared_backings_are_separate"




TAIL = "[configs]\nd = ['base']\n[cmdlines]\non = []\n"


@pytest.mark.parametrize("text, message", [
    ("[kernels", "not valid TOML"),
    ("nightly = 1\n", "unknown key(s) nightly"),
    ("[kernels.k]\nsource = 'debian'\n[configs]\nd = ['base']\n", "[cmdlines] is missing"),
    ("[kernels.k]\nsource = '/nonexistent'\n" + TAIL, "no such directory"),
    ("[kernels.k]\npatches = 'nopatches'\n" + TAIL, "--patch-dir"),
    ("[kernels.k]\nkpatches = 'v9'\n" + TAIL, "--kpatches v9: expected one of applied, v8"),
    ("[kernels.k]\n[configs]\nd = ['base', 'nosuch']\n[cmdlines]\non = ''\n",
     "configs.d: "),
    ("[kernels.k]\n" + TAIL + "[env]\nPATH = '/x'\n", "[env]: unknown variable PATH"),
    ("[kernels.k]\n" + TAIL + "[env]\nGMEMTEST_FUZZ = 'longer'\n",
     "GMEMTEST_FUZZ='longer': expected short or long"),
    ("[kernels.k]\n" + TAIL + "[env]\nGMEMTEST_SEED = true\n", "GMEMTEST_SEED must be a string"),
    ("[kernels.k]\n" + TAIL + "[env]\nGMEMTEST_STRESS_SECONDS = '-3'\n",
     "expected a number of seconds above 0"),
    ("env = 3\n[kernels.k]\n" + TAIL, "[env] must be a table"),
    ("[kernels.k]\nsource = 7\n" + TAIL, "[kernels.k]: source must be a string"),
    ("[kernels.k]\nseries_version = 'two'\n" + TAIL, "series_version must be a whole number"),
    ("[kernels.k]\nconfigs = ['nosuch']\n" + TAIL, "[kernels.k].configs: unknown config(s) "),
    ("[kernels.k]\n[configs]\nd = {fragments = ['base'], cmdlines = ['x']}\n[cmdlines]\n"
     "on = []\n", "configs.d.cmdlines: unknown command line(s) x"),
    ("[kernels.k]\n[configs]\nd = {cmdlines = ['on']}\n[cmdlines]\non = []\n",
     "configs.d: expected a list of fragments or a table"),
    ("[kernels.v8]\nseries = 'nosuch.mbox'\n" + TAIL, "[kernels.v8]: --series "),
    ("[kernels.v8]\nseries = 'm.toml'\npatches = 'kpatches'\n" + TAIL,
     "--series is the patches"),
])
def test_bad_matrix_file_is_one_line(tmp_path, text, message, gmemtest_cli):
    """A mistake in the matrix file names the key, in one line, exit 2, before any build."""
    config = tmp_path / "m.toml"
    config.write_text(text)
    proc = gmemtest_cli("matrix", "--config", str(config), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_shipped_matrices_load():
    """matrices/*.toml are valid: the nightly one has the applied series in three configs
    (the one without per-VM attributes booted only with the switch at its default) and v8 in
    the default one, on the newest supported base, and the applied series on the other
    supported base."""
    nightly = matrix.load(CHECKOUT / "matrices/nightly.toml")
    assert len(nightly.configs) == 4
    assert nightly.coverage == {"coverage"}
    assert [c.id for c in nightly.cells()] == NIGHTLY
    assert {c.kernel_name: c.spec.patches.form for c in nightly.cells()} == \
        {"applied": "applied", "v8": "v8", "applied-7.2": "applied"}
    bases = {c.kernel_name: c.spec.source.base for c in nightly.cells()}
    assert bases == {"applied": patchset.bases()[-1], "v8": patchset.bases()[-1],
                     "applied-7.2": "7.2"}
    assert set(bases.values()) == set(patchset.bases())
    assert nightly.env["GMEMTEST_FUZZ"] == "long"
    assert [c.id for c in matrix.load(CHECKOUT / "matrices/onoff.toml").cells()] == \
        [ON, OFF, COV_ON, COV_OFF]


@pytest.mark.timeout(600)
@pytest.mark.needs("linux_source")
def test_every_fragment_set_of_the_matrices_configures(tmp_path):
    """Each (kernel, fragment set) a shipped matrix names goes through the config step on its
    tree: a fragment that no longer fits (an option the lean base cannot set) fails here, in
    `make test`, rather than at night. The config step only, no build."""
    seen = set()
    for path in sorted((CHECKOUT / "matrices").glob("*.toml")):
        for cell in matrix.load(path).cells():
            key = (cell.spec.label(), cell.spec.fragments)
            if key in seen:
                continue
            seen.add(key)
            src = kernel.prepare(cell.spec, Progress(quiet=True))
            frags = kconfig.fragment_paths(list(cell.spec.fragments))
            build = tmp_path / f"b{len(seen)}"
            kconfig.generate(src, build, frags, dict(os.environ))  # raises on a dropped option
            assert (build / ".config").is_file()
    assert len(seen) >= 4


def test_failure_is_reported_with_its_message(tmp_path):
    """A failed test is listed with the first lines of its message (what the kernel did), as
    JUnit recorded it: here the no-zap mutant of kpatches/' "Convert memory in place with
    KVM_SET_MEMORY_ATTRIBUTES2" against the zap test."""
    junit = tmp_path / "junit.xml"
    junit.write_text(
        "<testsuites><testsuite><testcase classname='tests.test_routing' "
        "name='test_conversion_zaps_the_range_in_every_memslot'><failure message='AssertionError:"
        " to shared&#10;assert 13 == (5 + 4)'>traceback</failure></testcase>"
        "<testcase classname='tests.test_routing' name='test_two_memslots_one_file'/>"
        "</testsuite></testsuites>")
    out = report.BootReport("mutant", run=None, results=report.read_junit(junit))
    assert (out.passed, out.failed) == (1, 1)
    assert out.failures == {"tests.test_routing::test_conversion_zaps_the_range_in_every_memslot":
                            "AssertionError: to shared / assert 13 == (5 + 4)"}


def test_timeouts_and_errors_are_their_own_outcomes(tmp_path):
    """pytest-timeout's failure is a TIMEOUT and a failed setup an ERROR, in the run report
    and as KTAP directives; a failure's message becomes diagnostic lines before its result."""
    junit = tmp_path / "junit.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        "<testcase classname='t' name='slow'><failure message='Failed: Timeout &gt;300.0s'/>"
        "</testcase><testcase classname='t' name='broken'><error message='setup failed'/>"
        "</testcase><testcase classname='t' name='wrong'><failure message='assert 1 == 2'/>"
        "</testcase><testcase classname='t' name='absent'><skipped message='needs X: absent'/>"
        "</testcase></testsuite></testsuites>")
    results = report.read_junit(junit)
    assert [r.outcome for r in results] == [Outcome.TIMEOUT, Outcome.ERROR, Outcome.FAILED,
                                            Outcome.SKIPPED]
    doc = ktap.document(results, ["WARNING: CPU: 0 PID: 1 at virt/kvm/guest_memfd.c:1"])
    assert doc.splitlines() == [
        "KTAP version 1", "1..4",
        "# Failed: Timeout >300.0s", "not ok 1 t::slow # TIMEOUT Failed: Timeout >300.0s",
        "# setup failed", "not ok 2 t::broken # ERROR setup failed",
        "# assert 1 == 2", "not ok 3 t::wrong",
        "ok 4 t::absent # SKIP needs X: absent",
        "# kernel: WARNING: CPU: 0 PID: 1 at virt/kvm/guest_memfd.c:1"]


def test_matrix_ktap_nests_a_document_per_cell():
    """The matrix's KTAP holds each cell as a subtest: its document indented, then the cell's
    own line."""
    passed = TestResult("t::a", Outcome.PASSED)
    doc = ktap.nested([("k/default/on", [passed], [], TestResult("k/default/on", Outcome.PASSED)),
                       ("k/default/off", [], [], TestResult("k/default/off", Outcome.ERROR,
                                                            "build failed"))])
    assert doc.splitlines() == [
        "KTAP version 1", "1..2",
        "    KTAP version 1", "    # Subtest: k/default/on", "    1..1", "    ok 1 t::a",
        "ok 1 k/default/on",
        "    KTAP version 1", "    # Subtest: k/default/off", "    1..0",
        "# build failed", "not ok 2 k/default/off # ERROR build failed"]


@pytest.mark.parametrize("doc, message", [
    ("{}", "matrix.json.cells: expected an object, got null"),
    ('{"cells": {"a/b/c": 3}}', "matrix.json.cells.a/b/c: expected an object"),
    ('{"cells": {"a/b/c": {"ok": true, "verdict": "PASS", "findings": [], "tests": '
     '{"t": "great"}}}}', "'great' is no outcome"),
    ("[" * 100000, "not a matrix.json"),
])
def test_bad_baseline_is_an_error(tmp_path, doc, message):
    (tmp_path / "b.json").write_text(doc)
    with pytest.raises(GmemtestError, match=re.escape(message)):
        baseline.load_baseline(tmp_path / "b.json")


@pytest.fixture(scope="module")
def onoff(tmp_path_factory, gmemtest_cli) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The 4-cell matrix (in-place conversion on and off, in the default build and in its
    coverage build), run once, compared with a baseline in which the ENOTTY check also passed
    in the 'on' cell and the coverage run ran a line no run has."""
    tmp = tmp_path_factory.mktemp("matrix")
    baseline = tmp / "baseline.json"
    baseline.write_text(json.dumps({"cells": {
        ON: {"ok": True, "verdict": "PASS", "findings": [],
             "tests": {UNMAPS: "passed", ENOTTY: "passed"}},
        OFF: {"ok": True, "verdict": "PASS", "findings": [], "tests": {ENOTTY: "passed"}}},
        "coverage": {"applied/coverage": {
            "headline": {"run": 1, "never": 0, "percent": "100.0%",
                         "within": ["virt/kvm/"], "not_compiled": 0},
            "run": [GONE]}}}))
    out = tmp / "out"
    proc = gmemtest_cli("matrix", "--config", str(CHECKOUT / "matrices/onoff.toml"), "--out",
                        str(out), "--baseline", str(baseline), "--",
                        "-p", "no:xdist", "-q", "-k", " or ".join(t.split("::")[1] for t in
                                                                (UNMAPS, ENOTTY, SEPARATE)),
                        timeout=1500)
    print(proc.stdout, proc.stderr[-3000:])
    return proc, out


@pytest.mark.timeout(1600)
@pytest.mark.needs("linux_source")
def test_two_cells_from_one_build(onoff):
    """Both cells boot the same bzImage; each cell's tests follow the switch: the gmem path
    in 'on', the vm-attributes path and the ENOTTY check in 'off'."""
    proc, out = onoff
    doc = json.loads((out / "matrix.json").read_text())
    on, off = doc["cells"][ON], doc["cells"][OFF]
    assert on["bzimage"] == off["bzimage"]
    assert Path(on["bzimage"]).is_file()
    assert on["tests"][UNMAPS] == "passed"
    assert on["tests"][ENOTTY] == "skipped"
    assert off["tests"][ENOTTY] == "passed"
    assert off["tests"][UNMAPS] == "skipped"
    assert off["tests"][SEPARATE] == "passed"
    assert on["tests"][SEPARATE] == "skipped"
    assert on["ok"]
    assert off["ok"]
    assert not on["findings"]
    assert not off["findings"]


@pytest.mark.timeout(1600)
@pytest.mark.needs("linux_source")
def test_coverage_cells(onoff):
    """The coverage cells boot their own build (the same configuration, the series' files
    instrumented), run the same tests and keep each one's counters: the combined report
    draws the series with lines run by the test that unmaps (in 'on') and by the ENOTTY
    check (in 'off'), and the baseline's headline stands beside this run's."""
    proc, out = onoff
    doc = json.loads((out / "matrix.json").read_text())
    cells = doc["cells"]
    assert cells[COV_ON]["bzimage"] == cells[COV_OFF]["bzimage"] != cells[ON]["bzimage"]
    assert cells[COV_ON]["tests"] == cells[ON]["tests"]
    assert cells[COV_OFF]["tests"] == cells[OFF]["tests"]
    section = doc["coverage"]["applied/coverage"]
    head = section["headline"]
    assert 0 < head["run"] < head["run"] + head["never"], head  # 3 tests run some, not all
    combined = json.loads((out / "coverage/applied--coverage/coverage.json").read_text())
    tests = {t for p in combined["patches"] for h in p["hunks"] for ln in h["lines"]
             if ln["kind"] == "+" for t in ln["tests"]}
    assert f"{COV_ON}: tests/test_conversion.py::test_conversion_unmaps_every_process" in tests
    assert f"{COV_OFF}: tests/test_conversion.py::" \
        "test_gmem_ioctl_is_enotty_when_switched_off" in tests
    assert (out / section["report"]).is_file()
    assert section["run"]
    for cell in (COV_ON, COV_OFF):
        info = (out / "cells" / slug(cell) / "coverage.info").read_text()
        assert "SF:" in info, cell
        assert re.search(r"^DA:\d+,[1-9]", info, re.M), cell
    assert f"coverage applied/coverage: {head['run']} of" in proc.stdout
    assert "the baseline: 1 of 1 run (100.0%)" in proc.stdout


@pytest.mark.timeout(1600)
@pytest.mark.needs("linux_source")
def test_baseline_regression_sets_the_exit_status(onoff):
    """The baseline says the ENOTTY check passed in 'on'; now it skips: exit 1, named."""
    proc, out = onoff
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"regression: {ON}: {ENOTTY}: passed, now skipped" in proc.stdout
    assert f"regression: applied/coverage: no longer run: {GONE}" in proc.stdout
    assert json.loads((out / "matrix.json").read_text())["regressions"] == \
        [f"{ON}: {ENOTTY}: passed, now skipped", f"applied/coverage: no longer run: {GONE}"]


@pytest.mark.timeout(1600)
@pytest.mark.needs("linux_source")
def test_reports(onoff):
    """One JUnit file with a testsuite per cell, a KTAP file per cell, Markdown, and an HTML
    page whose links reach the console logs."""
    _, out = onoff
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == [ON, OFF, COV_ON, COV_OFF]
    for s in suites:
        names = {c.get("name") for c in s.iter("testcase")}
        assert {"kernel-health", UNMAPS.split("::")[1]} <= names
    for cell in (ON, OFF):
        slug = cell.replace("/", "--")
        ktap = (out / f"{slug}.ktap").read_text()
        assert ktap.startswith("KTAP version 1")
        assert "ok " in ktap
    page = (out / "report.html").read_text()
    for link in ("cells/applied--default--on/console.log",
                 "cells/applied--default--off/console.log"):
        assert f"href='{link}'" in page
        assert (out / link).is_file()
    assert "Regressions against the baseline" in page
    md = (out / "summary.md").read_text()
    assert f"| {ON} |" in md
    assert f"| {OFF} |" in md


# --- a job per cell: --list, --cell, merge; CI engines; KCIDB ----------------------------------

def cell_result(tmp_path: Path, kernel: str, config: str, cmdline: str, *,
                built: bool = True, kind: BootKind | None = None) -> CellResult:
    """A cell's result as a boot would leave it: its JUnit in its directory, its record
    (and the contract of a boot of ``kind``)."""
    d = tmp_path / "cells" / slug(cell_id(kernel, config, cmdline))
    d.mkdir(parents=True)
    if kind is not None:
        contract.Contract(kind, (), ()).write(d / contract.FILE)
    (d / "junit.xml").write_text(
        "<testsuites><testsuite><testcase classname='tests.test_routing' name='test_a[gmem]'/>"
        "<testcase classname='tests.test_routing' name='test_b'><skipped message='needs X: "
        "absent'/></testcase></testsuite></testsuites>")
    run = Run(d, d / "console.log", status=0, accel="tcg", boot_seconds=3.0, seconds=40.0)
    r = CellResult(kernel, config, cmdline, report.evaluate(cell_id(kernel, config, cmdline),
                                                           run) if built else None,
                   None if built else "build failed: make: *** [Makefile] Error 2",
                   build_stage=None if built else BuildStage.COMPILE,
                   cmdline=[f"kvm.gmem_in_place_conversion={int(cmdline == 'on')}"],
                   source="linux-source-7.2 7.2.13-1", patches=["0001-a.patch"],
                   fragments=["base", "kvm"], started="2026-11-29T16:00:00Z")
    cells.save(r, d)
    return r


def test_list_prints_every_cell_with_its_id(gmemtest_cli):
    """`--list`: the cells, in order, as JSON with stable ids a CI engine makes jobs of."""
    proc = gmemtest_cli("matrix", "--config", str(CHECKOUT / "matrices/onoff.toml"), "--list")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert [c["id"] for c in listed] == [ON, OFF, COV_ON, COV_OFF]
    assert listed[0]["slug"] == "applied--default--on"


def listed(gmemtest_cli, config: str) -> list[str]:
    proc = gmemtest_cli("matrix", "--config", str(CHECKOUT / config), "--list")
    return [c["id"] for c in json.loads(proc.stdout)]


def test_ci_engines_run_exactly_the_listed_cells(gmemtest_cli):
    """The GitLab pipeline and the GitHub workflow make a job of exactly the cells
    `gmemtest matrix --list` prints, for every matrix they run."""
    gitlab = yaml.safe_load((CHECKOUT / ".gitlab-ci.yml").read_text())
    for job, config in (("nightly-cell", "matrices/nightly.toml"),
                        ("onoff-cell", "matrices/onoff.toml")):
        assert gitlab[job]["parallel"]["matrix"][0]["CELL"] == listed(gmemtest_cli, config), job
        assert gitlab[job]["rules"] == [{"if": f'$MATRIX == "{config}"'}]
    github = yaml.safe_load((CHECKOUT / ".github/workflows/nightly.yml").read_text())
    include = github["jobs"]["cell"]["strategy"]["matrix"]["include"]
    assert [c["id"] for c in include] == listed(gmemtest_cli, "matrices/nightly.toml")
    assert all(c["slug"] == slug(c["id"]) for c in include)
    # the mutation cells: nightly only, the same shards with the same budget on both engines,
    # and a merge of them
    budget = gitlab["variables"]["MUTATE_BUDGET"]
    shards = gitlab["mutate-cell"]["parallel"]
    assert github["jobs"]["mutate"]["strategy"]["matrix"]["shard"] == list(range(1, shards + 1))
    for job in ("mutate-cell", "mutate-merge"):
        assert gitlab[job]["rules"] == [{"if": '$MATRIX == "matrices/nightly.toml"'}], job
    assert '$VENV/bin/gmemtest mutate --budget "$MUTATE_BUDGET" --shard ' \
        '"$CI_NODE_INDEX/$CI_NODE_TOTAL" --out "mutate-shard-$CI_NODE_INDEX" $MUTATE_ARGS' in \
        gitlab["mutate-cell"]["script"]
    assert gitlab["variables"]["MUTATE_ARGS"] == ""  # a quick pipeline sets it
    assert f".venv/bin/gmemtest mutate --budget {budget} --shard ${{{{ matrix.shard }}}}/" \
        f"{shards} --out mutate-shard-${{{{ matrix.shard }}}}" in \
        [step.get("run") for step in github["jobs"]["mutate"]["steps"]]
    merge = "gmemtest mutate merge mutate-shard-* --out mutate-report"
    assert f"$VENV/bin/{merge}" in gitlab["mutate-merge"]["script"]
    assert f".venv/bin/{merge}" in [s.get("run") for s in github["jobs"]["mutate-merge"]["steps"]]
    # the marks, weekly: the same command on both engines
    assert "$VENV/bin/gmemtest mutate --recheck-marks --out marks-report" in \
        gitlab["mutate-marks"]["script"]
    assert ".venv/bin/gmemtest mutate --recheck-marks --out marks-report" in \
        [step.get("run") for step in github["jobs"]["mutate-marks"]["steps"]]
    assert github["jobs"]["mutate-marks"]["if"].endswith(
        repr(github[True]["schedule"][1]["cron"]))


def test_unknown_cell_is_one_line(gmemtest_cli, tmp_path):
    proc = gmemtest_cli("matrix", "--config", str(CHECKOUT / "matrices/onoff.toml"), "--cell",
                        "applied/default/sideways", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "gmemtest matrix: error: --cell applied/default/sideways: no such cell in the "
        f"matrix (its cells: {ON}, {OFF}, {COV_ON}, {COV_OFF})"]


@pytest.mark.parametrize("case, message", [
    ("not a cell", "is not a cell's results directory (no cell.json)"),
    ("twice", f"cell {ON} was run twice"),
    ("missing", f"cell {OFF} is missing"),
])
def test_merge_mistakes_are_one_line(gmemtest_cli, tmp_path, case, message):
    """A directory that is not a cell's, a cell given twice and a missing cell: one line each,
    exit 2, and no report written."""
    cell_result(tmp_path / "a", "applied", "default", "on")
    dirs = [tmp_path / "a" / "cells" / slug(ON)]
    if case == "not a cell":
        dirs.append(tmp_path)
    elif case == "twice":
        cell_result(tmp_path / "b", "applied", "default", "on")
        dirs.append(tmp_path / "b")
    proc = gmemtest_cli("matrix", "merge", *map(str, dirs), "--config",
                        str(CHECKOUT / "matrices/onoff.toml"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gmemtest matrix merge: error: ")
    assert message in lines[0]
    assert not (tmp_path / "out" / "matrix.json").exists()


def test_a_cell_with_a_skip_its_kind_of_boot_may_not_have_fails_and_the_merge_names_it(
        gmemtest_cli, tmp_path):
    """A cell's boot (in-place conversion on) skipped a test for a need its kind of boot may
    not lack (gmemtest/results/expected_skips.toml): the cell fails, through its record and
    the merge, which names the test and the skip."""
    for cid in (ON, OFF, COV_ON, COV_OFF):
        kernel, config, cmdline = cid.split("/")
        cell_result(tmp_path, kernel, config, cmdline,
                    kind=BootKind.ON if cid == ON else None)
    proc = gmemtest_cli("matrix", "merge", *map(str, sorted((tmp_path / "cells").iterdir())),
                        "--config", str(CHECKOUT / "matrices/onoff.toml"), "--out",
                        str(tmp_path / "out"))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    doc = json.loads((tmp_path / "out/matrix.json").read_text())
    assert not doc["cells"][ON]["ok"]
    assert doc["cells"][OFF]["ok"]
    want = ("FAIL: 1 skip(s) a boot (in-place on) may not have, first "
            "tests.test_routing::test_b: needs X: absent")
    assert doc["cells"][ON]["verdict"] == want
    assert want in proc.stdout, proc.stdout


def test_kcidb_document_is_valid(tmp_path):
    """The KCIDB document of a matrix (a cell that ran, a cell whose kernel did not build)
    validates against the kcidb-io package's schema: checkouts, builds, tests with paths and
    statuses, and each cell's kernel health as a test."""
    results = [cell_result(tmp_path, "applied", "default", "on"),
               cell_result(tmp_path, "applied", "debug", "on", built=False)]
    doc = kcidb.document(results)
    kcidb_io.schema.LATEST.validate(doc)
    assert len(doc["checkouts"]) == 1
    assert len(doc["builds"]) == 2
    assert [(t["path"], t["status"]) for t in doc["tests"]] == [
        ("gmemtest.test_routing.test_a.gmem", "PASS"), ("gmemtest.test_routing.test_b", "SKIP"),
        ("gmemtest.kernel_health", "PASS")]
    assert doc["builds"][1]["status"] == "FAIL"
    assert "Error 2" in doc["builds"][1]["log_excerpt"]


def _without_times(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("generated", None)
    return doc


@pytest.mark.timeout(1600)
@pytest.mark.needs("linux_source")
def test_merge_writes_what_one_run_writes(onoff, gmemtest_cli, tmp_path):
    """The cells of a one-machine run merged from their directories give the same junit.xml,
    KTAP, summaries, report.html, matrix.json and baseline verdict."""
    proc, out = onoff
    merged = tmp_path / "merged"
    m = gmemtest_cli("matrix", "merge", *(str(p) for p in sorted((out / "cells").iterdir())),
                     "--config", str(CHECKOUT / "matrices/onoff.toml"), "--out", str(merged),
                     "--baseline", str(out.parent / "baseline.json"))
    assert m.returncode == proc.returncode, m.stderr
    for name in ("junit.xml", "matrix.ktap", f"{slug(ON)}.ktap", f"{slug(OFF)}.ktap",
                 "summary.txt", "summary.md"):
        assert (merged / name).read_text() == (out / name).read_text(), name
    one, two = (json.loads((d / "matrix.json").read_text()) for d in (out, merged))
    assert _without_times(one) == _without_times(two)
    dated = re.compile(r"<p>\d{4}-\d\d-\d\d \d\d:\d\d UTC</p>")  # when the page was written
    assert dated.sub("", (merged / "report.html").read_text()) == \
        dated.sub("", (out / "report.html").read_text())


@pytest.mark.timeout(2400)
@pytest.mark.needs("linux_source", "gitlab_ci_local")
def test_gitlab_pipeline_runs_here(onoff, tmp_path):
    """gitlab-ci-local runs .gitlab-ci.yml on matrices/onoff.toml in its shell executor, in a
    copy of this checkout: both cell jobs and the merge job pass, the merged matrix.json has
    the same cells and outcomes as the one-machine run, and its KCIDB file validates."""
    _, out = onoff
    repo = ci_local.checkout_copy(tmp_path / "repo")
    proc = ci_local.run(repo, {
        "MATRIX": "matrices/onoff.toml", "PYTEST_ARGS": "-p no:xdist -q",
        "PYTEST_K": " or ".join(t.split("::")[1] for t in (UNMAPS, ENOTTY, SEPARATE))})
    assert proc.returncode == 0, proc.stdout[-3000:]
    for job in (*(f"onoff-cell: [{c}]" for c in (ON, OFF, COV_ON, COV_OFF)), "merge"):
        assert re.search(rf"PASS\s+{re.escape(job)}", proc.stdout), job
    merged_doc = json.loads((repo / "matrix-report/matrix.json").read_text())
    alone_doc = json.loads((out / "matrix.json").read_text())
    merged, alone = merged_doc["cells"], alone_doc["cells"]
    assert {c: (v["ok"], v["tests"]) for c, v in merged.items()} == \
        {c: (v["ok"], v["tests"]) for c, v in alone.items()}
    assert merged_doc["coverage"]["applied/coverage"]["run"] == \
        alone_doc["coverage"]["applied/coverage"]["run"]
    kcidb_io.schema.LATEST.validate(json.loads((repo / "matrix-report/kcidb.json").read_text()))
