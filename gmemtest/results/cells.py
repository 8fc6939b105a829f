"""The results of a matrix's cells, in the form its reports and its baseline read them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmemtest.errors import BuildStage, GmemtestError

from . import contract, posted
from .health import Finding
from .outcome import Outcome, TestResult
from .posted import PostedInfo
from .report import BootReport
from .run import Crash, Ended, Run
from .shape import ListOf, MapOf, Maybe, check, read_json

CELL_FILE = "cell.json"  # in a cell's results directory: what merging needs of the cell


def cell_id(kernel: str, config: str, cmdline: str) -> str:
    """A cell's id: ``KERNEL/CONFIG/CMDLINE``, by the names the matrix file gives them."""
    return f"{kernel}/{config}/{cmdline}"


def slug(cid: str) -> str:
    """A cell id as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", cid.replace("/", "--"))


@dataclass
class CellResult:
    """One cell of a matrix: the names of its kernel, kconfig set and command line, and the
    report on its boot (None: the kernel did not build, ``problem`` says why and
    ``build_stage`` where the build stopped, a :class:`gmemtest.errors.BuildStage`)."""

    kernel_name: str
    config: str
    cmdline_name: str
    outcome: BootReport | None
    problem: str | None = None
    build_stage: BuildStage | None = None
    build_seconds: float | None = None
    bzimage: str | None = None
    kernel: str | None = None  # what was built: source version and patches
    cmdline: list[str] = field(default_factory=list)
    source: str | None = None  # the source's version, or a tree's commit
    patches: list[str] = field(default_factory=list)
    fragments: list[str] = field(default_factory=list)
    started: str | None = None  # when the cell started, UTC, ISO 8601
    series: PostedInfo | None = None  # a posted series the kernel holds
    coverage: dict[str, Any] | None = None  # a coverage cell: the headline of its coverage.json

    @property
    def id(self) -> str:
        return cell_id(self.kernel_name, self.config, self.cmdline_name)

    @property
    def slug(self) -> str:
        return slug(self.id)

    @property
    def console(self) -> str | None:
        """Its boot's console log, relative to the matrix's report (None: it did not boot)."""
        return f"cells/{self.slug}/console.log" if self.outcome else None

    @property
    def ktap(self) -> str:
        """Its KTAP document, relative to the matrix's report."""
        return f"{self.slug}.ktap"

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok

    @property
    def ran(self) -> bool:
        """Whether the cell ran its tests: its kernel built and its boot ran them."""
        return self.outcome is not None and self.outcome.ran

    def verdict(self) -> str:
        return f"ERROR: {self.problem}" if self.outcome is None else self.outcome.verdict()

    def summary(self) -> dict[str, Any]:
        """What matrix.json records for the cell (and a baseline is compared with)."""
        o = self.outcome
        return {
            "kernel": self.kernel_name, "config": self.config,
            "cmdline": self.cmdline_name, "ok": self.ok, "verdict": self.verdict(),
            "kernel_tests_run": o.kernel_ran if o else 0,
            "passed": o.passed if o else 0, "failed": o.failed if o else 0,
            "skipped": o.skipped if o else 0, "xfailed": o.xfailed if o else 0,
            "findings": [str(f) for f in o.findings] if o else [],
            "tests": {k: str(v) for k, v in sorted(o.tests.items())} if o else {},
            "console": self.console, "ktap": self.ktap, "bzimage": self.bzimage,
            "built": self.kernel,
            "revision": o.revision() if o else None,
            "accel": o.run.accel if o and o.run else None,
            "build_seconds": self.build_seconds,
            "boot_seconds": o.run.boot_seconds if o and o.run else None,
            "run_seconds": round(o.run.total_seconds, 1) if o and o.run else None,
            "coverage": self.coverage,
        }


def to_json(r: CellResult) -> dict[str, Any]:
    """Everything of a cell's result that its reports are made from, as JSON."""
    o = r.outcome
    report = None if o is None else {
        "label": o.label, "problem": o.problem, "ended": str(o.ended), "tallies": o.tallies,
        "properties": o.properties,
        "asked": o.asked.to_json() if o.asked is not None else None,
        "kernel_tests": sorted(o.kernel_tests),
        "crashes": [[c.line, list(c.tests)] for c in o.crashes],
        "results": [[t.name, str(t.outcome), t.message] for t in o.results],
        "findings": [[f.kind, f.line, list(f.tests)] for f in o.findings],
        "run": None if o.run is None else {
            "status": o.run.status, "accel": o.run.accel, "boot_seconds": o.run.boot_seconds,
            "seconds": o.run.total_seconds, "limit_hit": o.run.limit_hit}}
    return {"id": r.id, "kernel_name": r.kernel_name, "config": r.config,
            "cmdline_name": r.cmdline_name, "problem": r.problem,
            "build_stage": str(r.build_stage) if r.build_stage else None,
            "build_seconds": r.build_seconds, "bzimage": r.bzimage, "kernel": r.kernel,
            "cmdline": r.cmdline, "source": r.source, "patches": r.patches,
            "fragments": r.fragments, "started": r.started,
            "series": asdict(r.series) if r.series else None,
            "coverage": r.coverage, "report": report}


NUMBER = (int, float)
SHAPE = {
    "id": str, "kernel_name": str, "config": str, "cmdline_name": str, "problem": Maybe(str),
    "build_stage": Maybe(str), "build_seconds": Maybe(NUMBER), "bzimage": Maybe(str),
    "kernel": Maybe(str), "cmdline": ListOf(str), "source": Maybe(str),
    "patches": ListOf(str), "fragments": ListOf(str), "started": Maybe(str),
    "series": Maybe(posted.SHAPE), "coverage": Maybe(MapOf(object)),
    "report": Maybe({
        "label": str, "problem": Maybe(str), "ended": str, "tallies": ListOf(MapOf(object)),
        "properties": MapOf(str), "asked": Maybe(contract.SHAPE),
        "kernel_tests": ListOf(str), "crashes": ListOf(ListOf((str, list))),
        "results": ListOf(ListOf(str)), "findings": ListOf(ListOf((str, list))),
        "run": Maybe({"status": Maybe(int), "accel": str, "boot_seconds": Maybe(NUMBER),
                      "seconds": NUMBER, "limit_hit": Maybe(str)})})}


def from_json(doc: Any, directory: Path) -> CellResult:
    """A cell's result as :func:`to_json` wrote it into ``directory``; one line (a
    GmemtestError) for a document of another shape."""
    check(doc, SHAPE, "cell")
    rep = doc["report"]
    outcome = None
    if rep is not None:
        for i, r in enumerate(rep["results"]):
            if len(r) != 3 or r[1] not in set(Outcome):
                raise GmemtestError(f"cell.report.results[{i}]: expected [test, outcome, "
                                    "message]")
        for i, f in enumerate(rep["findings"]):
            if len(f) != 3 or not isinstance(f[0], str) or not isinstance(f[1], str) \
                    or not isinstance(f[2], list) or not all(isinstance(t, str) for t in f[2]):
                raise GmemtestError(f"cell.report.findings[{i}]: expected [kind, line, tests]")
        if rep["ended"] not in set(Ended):
            raise GmemtestError(f"cell.report.ended: {rep['ended']!r} is no way a boot ends")
        run = None if rep["run"] is None else Run(directory, directory / "console.log",
                                                   **rep["run"])
        for i, c in enumerate(rep["crashes"]):
            if len(c) != 2 or not isinstance(c[0], str) or not isinstance(c[1], list) \
                    or not all(isinstance(t, str) for t in c[1]):
                raise GmemtestError(f"cell.report.crashes[{i}]: expected [line, tests]")
        outcome = BootReport(
            rep["label"], run, [TestResult(n, Outcome(o), m) for n, o, m in rep["results"]],
            [Finding(k, line, tuple(tests)) for k, line, tests in rep["findings"]],
            rep["problem"], rep["tallies"], Ended(rep["ended"]), rep["properties"],
            contract.from_json(rep["asked"]) if rep["asked"] is not None else None,
            [Crash(line, tuple(tests)) for line, tests in rep["crashes"]],
            set(rep["kernel_tests"]))
    if doc["build_stage"] is not None and doc["build_stage"] not in set(BuildStage):
        raise GmemtestError(f"cell.build_stage: {doc['build_stage']!r} is no build stage")
    fields = {k: doc[k] for k in ("kernel_name", "config", "cmdline_name", "problem",
                                  "build_seconds", "bzimage", "kernel",
                                  "cmdline", "source", "patches", "fragments", "started",
                                  "coverage")}
    result = CellResult(outcome=outcome, **fields,
                        build_stage=BuildStage(doc["build_stage"]) if doc["build_stage"]
                        else None,
                        series=PostedInfo(**doc["series"]) if doc["series"] else None)
    if result.id != doc["id"]:
        raise GmemtestError(f"cell.id: {doc['id']!r} is not its kernel/config/cmdline")
    return result


def save(r: CellResult, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CELL_FILE).write_text(json.dumps(to_json(r), indent=1) + "\n")


def load(directory: Path) -> CellResult:
    """The cell whose results ``directory`` holds; one line when it holds none."""
    path = directory / CELL_FILE
    doc = read_json(path, "a cell's record", f"{directory} is not a cell's results directory "
                    f"(no {CELL_FILE}): pass the directories `gmemtest matrix --cell` wrote")
    try:
        return from_json(doc, directory)
    except GmemtestError as e:
        raise GmemtestError(f"{path}: not a cell's record ({e})") from None
