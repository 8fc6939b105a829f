"""The command boundary under generated input: every file the tool reads (a posted series'
mbox, a matrix file, its [env] values, a baseline, a build manifest, a cell's record), damaged
in every way hypothesis finds, goes through the real command. The answer is either the
command's work or exactly one line on stderr with exit 2: never a traceback, never the
last-resort "internal error", and nothing left behind (no results directory, no report)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from bases import BASE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmemtest.cli import main
from gmemtest.results import cells, mutation, report
from gmemtest.results.cells import CellResult, cell_id, slug
from gmemtest.results.run import Run
from gmemtest.vmtier import manifest
from gmemtest.workflows import mutate

pytestmark = pytest.mark.host_only
CHECKOUT = Path(__file__).resolve().parent.parent
EXAMPLES = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def run(*argv: str) -> tuple[int, str, str]:
    """`gmemtest ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def one_line_or_work(rc: int, err: str, *, left: list[Path] = ()) -> bool:
    """The boundary's promise; True when the input was refused."""
    assert "Traceback" not in err, err
    assert "internal error" not in err, err
    if rc == 0:
        return False
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, (rc, err)
    assert lines[0].startswith("gmemtest "), (rc, err)
    for p in left:
        assert not p.exists(), f"{p} left behind"
    return True


class Tally:
    """How many inputs a property test fed the command, and how many it refused: at least 200
    inputs, and both sides of the boundary seen."""

    def __init__(self) -> None:
        self.inputs = self.refused = 0

    def __call__(self, refused: bool) -> None:
        self.inputs += 1
        self.refused += refused

    def check(self, least_refused: int = 50) -> None:
        print(f"{self.inputs} inputs, {self.refused} refused")
        assert self.inputs >= 200, self.inputs
        assert self.refused >= least_refused, f"{self.refused} of {self.inputs} refused"


def mutations(text: str) -> st.SearchStrategy[str]:
    """``text`` damaged: lines dropped, duplicated, swapped, cut short or overwritten with
    random characters, at places and in numbers hypothesis picks."""
    lines = text.splitlines(keepends=True)

    @st.composite
    def damaged(draw: st.DrawFn) -> str:
        out = list(lines)
        for _ in range(draw(st.integers(1, 6))):
            if not out:
                break
            i = draw(st.integers(0, len(out) - 1))
            kind = draw(st.sampled_from(["drop", "dup", "swap", "cut", "noise", "truncate"]))
            if kind == "drop":
                del out[i]
            elif kind == "dup":
                out.insert(i, out[i])
            elif kind == "swap":
                j = draw(st.integers(0, len(out) - 1))
                out[i], out[j] = out[j], out[i]
            elif kind == "cut":
                out[i] = out[i][:draw(st.integers(0, len(out[i])))]
            elif kind == "noise":
                out[i] = draw(st.text(max_size=40)) + "\n"
            else:
                out = out[:i]
        return "".join(out)

    return damaged()


def garbage() -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=2000),
                     st.text(max_size=500).map(lambda t: t.encode("utf-8", "replace")))


def json_values() -> st.SearchStrategy[object]:
    return st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                        max_leaves=12)


# --- a posted series' mbox --------------------------------------------------------------------

def small_series() -> str:
    """Two patches as `git format-patch --stdout --cover-letter --thread` writes them."""
    patch = ("From {sha} Mon Sep 17 00:00:00 2001\nFrom: A U Thor <a@example.org>\n"
             "Date: Sun, 29 Nov 2026 12:00:00 +0000\nSubject: [PATCH v2 {k}/2] x: change {k}\n"
             "Message-Id: <p{k}@example.org>\nIn-Reply-To: <c@example.org>\n\n"
             "Why {k}.\n\nSigned-off-by: A U Thor <a@example.org>\n---\n f{k} | 1 +\n\n"
             "diff --git a/f{k} b/f{k}\nnew file mode 100644\n--- /dev/null\n+++ b/f{k}\n"
             "@@ -0,0 +1 @@\n+{k}\n-- \n2.39.5\n\n")
    cover = ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
             "From: A U Thor <a@example.org>\nDate: Sun, 29 Nov 2026 12:00:00 +0000\n"
             "Subject: [PATCH v2 0/2] x: two changes\nMessage-Id: <c@example.org>\n\n"
             "The cover.\n\n")
    return cover + "".join(patch.format(sha=f"{k:040x}", k=k) for k in (1, 2))


def test_mbox(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.one_of(mutations(small_series()).map(str.encode), garbage()))
    def feed(data: bytes) -> None:
        mbox = tmp_path_factory.mktemp("mbox") / "series.mbox"
        mbox.write_bytes(data)
        rc, out, err = run("kernel", "show", "--series", str(mbox))
        refused = one_line_or_work(rc, err)
        if not refused:
            assert out.startswith("v")
            assert f" on Debian linux-source-{BASE}" in out
        tally(refused)

    feed()
    tally.check()


# --- a matrix file and its [env] --------------------------------------------------------------

def test_matrix_file(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.one_of(mutations((CHECKOUT / "matrices/nightly.toml").read_text())
                     .map(str.encode), garbage()))
    def feed(data: bytes) -> None:
        config = tmp_path_factory.mktemp("matrix") / "m.toml"
        config.write_bytes(data)
        rc, out, err = run("matrix", "--config", str(config), "--list")
        refused = one_line_or_work(rc, err)
        if not refused:
            assert isinstance(json.loads(out), list)
        tally(refused)

    feed()
    tally.check()


TOML_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False),
                        st.booleans(), st.lists(st.text(max_size=5), max_size=3))


def toml(value: object) -> str:
    return json.dumps(value)  # TOML's strings, numbers, booleans and arrays read as JSON's


KNOBS = ["GMEMTEST_FUZZ", "GMEMTEST_FUZZ_SECONDS", "GMEMTEST_SEED", "GMEMTEST_STRESS_SECONDS",
         "GMEMTEST_REVISION", "GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES", "PATH", "GMEMTEST_X"]


def test_matrix_env_values(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.dictionaries(st.sampled_from(KNOBS), TOML_VALUES, min_size=1, max_size=4))
    def feed(env: dict[str, object]) -> None:
        config = tmp_path_factory.mktemp("env") / "m.toml"
        config.write_text((CHECKOUT / "matrices/onoff.toml").read_text() + "\n[env]\n"
                          + "".join(f"{k} = {toml(v)}\n" for k, v in env.items()))
        rc, out, err = run("matrix", "--config", str(config), "--list")
        tally(one_line_or_work(rc, err))

    feed()
    tally.check()


# --- the results of cells run apart, and a baseline ---------------------------------------------

ON = "applied/default/on"


def default_cells(root: Path) -> Path:
    """matrices/onoff.toml without its coverage configuration: the two cells cell_dirs makes."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "onoff-default.toml"
    config.write_text("".join(line for line in (CHECKOUT / "matrices/onoff.toml").read_text()
                              .splitlines(keepends=True) if not line.startswith("coverage =")))
    return config


def cell_dirs(root: Path) -> list[Path]:
    """The default configuration's two cells of matrices/onoff.toml, as `matrix --cell`
    leaves them."""
    dirs = []
    for cmdline in ("on", "off"):
        d = root / slug(cell_id("applied", "default", cmdline))
        d.mkdir(parents=True)
        (d / "junit.xml").write_text("<testsuites><testsuite><testcase classname='t' name='a'/>"
                                     "</testsuite></testsuites>")
        r = CellResult("applied", "default", cmdline,
                       report.evaluate(cmdline, Run(d, d / "console.log", status=0)))
        cells.save(r, d)
        dirs.append(d)
    return dirs


def doc_mutations(doc: object) -> st.SearchStrategy[object]:
    """A JSON document with one of its values replaced, somewhere, by another value."""
    paths: list[tuple[object, ...]] = []

    def walk(node: object, path: tuple[object, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, (*path, i))

    walk(doc, ())

    @st.composite
    def mutated(draw: st.DrawFn) -> object:
        new = json.loads(json.dumps(doc))
        path = draw(st.sampled_from(paths))
        value = draw(json_values())
        if not path:
            return value
        node = new
        for key in path[:-1]:
            node = node[key]
        if draw(st.booleans()) and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return new

    return mutated()


CELL_DOC = json.loads(json.dumps(cells.to_json(CellResult(
    "applied", "default", "on", report.BootReport("on", Run(Path("/x"), Path("/x/c"), status=0),
                                                  [], [], None, [{"test": "t", "n": 1}]),
    cmdline=["kvm.gmem_in_place_conversion=1"], source="7.2", fragments=["base"]))))


def test_cell_record(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.one_of(doc_mutations(CELL_DOC).map(lambda d: json.dumps(d).encode()), garbage()))
    def feed(data: bytes) -> None:
        root = tmp_path_factory.mktemp("cells")
        on, off = cell_dirs(root / "cells")
        (on / cells.CELL_FILE).write_bytes(data)
        out = root / "report"
        rc, _, err = run("matrix", "merge", str(on), str(off), "--config",
                         str(default_cells(root)), "--out", str(out))
        tally(one_line_or_work(rc if rc != 1 else 0, err, left=[out]))

    feed()
    tally.check()


BASELINE = {"cells": {ON: {"ok": True, "verdict": "PASS", "findings": [], "tests": {"t::a":
                                                                                   "passed"}}}}


def test_baseline(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.one_of(doc_mutations(BASELINE).map(lambda d: json.dumps(d).encode()), garbage()))
    def feed(data: bytes) -> None:
        root = tmp_path_factory.mktemp("base")
        dirs = cell_dirs(root / "cells")
        baseline = root / "baseline.json"
        baseline.write_bytes(data)
        out = root / "report"
        rc, _, err = run("matrix", "merge", *map(str, dirs), "--config",
                         str(default_cells(root)), "--out", str(out),
                         "--baseline", str(baseline))
        tally(one_line_or_work(rc if rc != 1 else 0, err, left=[out]))

    feed()
    tally.check()


def shard_reports(root: Path) -> tuple[Path, Path]:
    """The two shards' report directories of a small mutation run."""
    results = [mutation.Result(f"{i:012x}", "virt/kvm/guest_memfd.c", 3 + i, "f", 1, "s",
                               "negate", "a < b", "a >= b", o, tests=["on: t"])
               for i, o in enumerate((mutation.KILLED, mutation.UNOBSERVABLE, mutation.KILLED))]
    out = []
    for k in (1, 2):
        shard = mutation.Shard(k, 2)
        with contextlib.redirect_stdout(io.StringIO()):
            mutate.write_reports(root / f"s{k}", shard.of(results), "k", shard)
        out.append(root / f"s{k}")
    return out[0], out[1]


def test_mutation_report(tmp_path_factory):
    tally = Tally()
    good = tmp_path_factory.mktemp("shard")
    doc = json.loads((shard_reports(good)[0] / mutation.REPORT).read_text())

    @EXAMPLES
    @given(st.one_of(doc_mutations(doc).map(lambda d: json.dumps(d).encode()), garbage()))
    def feed(data: bytes) -> None:
        root = tmp_path_factory.mktemp("shards")
        one, two = shard_reports(root)
        (one / mutation.REPORT).write_bytes(data)
        out = root / "merged"
        rc, _, err = run("mutate", "merge", str(one), str(two), "--out", str(out))
        tally(one_line_or_work(rc if rc != 1 else 0, err, left=[out]))

    feed()
    tally.check()


# --- a build manifest ---------------------------------------------------------------------------

def bzimage(path: Path) -> Path:
    """A file with the bzImage setup header (enough for the check; never booted here)."""
    head = bytearray(0x400)
    head[0x1FE:0x200] = b"\x55\xaa"
    head[0x202:0x206] = b"HdrS"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(head))
    return path


def manifest_doc(build: Path) -> dict[str, object]:
    return {"kind": "debian", "source_path": "/src/linux", "version": "linux-source-7.2 7.2.13-1",
            "commit": None, "patch_set": "kpatches/7.2 (applied)", "patches": ["0001-a.patch"],
            "posted": None, "fragments": ["base"], "config_hash": "0" * 16,
            "build_dir": str(build), "bzimage": str(build / manifest.BZIMAGE),
            "headers": str(build / "usr/include"),
            "config": str(build / ".config"), "switch": True, "gcov": [], "build_seconds": 1.5,
            "objects_compiled": 3, "objects_cold": 835, "built_at": "2026-12-02T00:00:00Z"}


def test_build_manifest(tmp_path_factory):
    tally = Tally()

    @EXAMPLES
    @given(st.data())
    def feed(data: st.DataObject) -> None:
        build = tmp_path_factory.mktemp("build")
        bzimage(build / manifest.BZIMAGE)
        content = data.draw(st.one_of(
            doc_mutations(manifest_doc(build)).map(lambda d: json.dumps(d).encode()),
            garbage()))
        (build / manifest.NAME).write_bytes(content)
        rc, out, err = run("kernel", "show", str(build))
        refused = one_line_or_work(rc, err)
        if not refused:
            assert out.strip()
        tally(refused)

    feed()
    tally.check()


def test_a_valid_example_of_each_kind_is_work_not_an_error(tmp_path):
    """The generators start from valid documents: each, undamaged, is accepted (so the tests
    above see both sides of the boundary)."""
    mbox = tmp_path / "s.mbox"
    mbox.write_text(small_series())
    assert run("kernel", "show", "--series", str(mbox))[0] == 0
    build = tmp_path / "build"
    bzimage(build / manifest.BZIMAGE)
    (build / manifest.NAME).write_text(json.dumps(manifest_doc(build)))
    rc, out, _ = run("kernel", "show", str(build))
    assert rc == 0
    assert "kpatches/7.2 (applied)" in out
    dirs = cell_dirs(tmp_path / "cells")
    (tmp_path / "b.json").write_text(json.dumps(BASELINE))
    rc, _, err = run("matrix", "merge", *map(str, dirs), "--config",
                     str(default_cells(tmp_path)), "--out", str(tmp_path / "r"),
                     "--baseline", str(tmp_path / "b.json"))
    assert rc in (0, 1), err
    assert (tmp_path / "r" / "matrix.json").exists(), err
    shutil.rmtree(tmp_path / "r")
