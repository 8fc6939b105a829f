"""`gmemtest matrix`: the nightly job over kernels x kconfig fragment sets x kernel command lines.

Each (kernel, fragment set) is built once and booted once per command line. The results of the
cells are merged into one JUnit XML (a testsuite per cell), one KTAP file per cell, a terminal
table, Markdown, a self-contained HTML page and ``matrix.json``, which a later run takes as its
``--baseline`` to find regressions.

The configuration is TOML::

    pytest_args = ["-n", "auto"]            # optional; what the guest's pytest is given
                                            # (default: qemu.parallelism())

    [env]                                   # optional; the suite's knobs, each value
    GMEMTEST_FUZZ = "long"                  # checked (gmemtest.testing.tunables)

    [kernels.applied]
    source = "debian"                       # Debian's linux-source-7.2 ...
    kpatches = "applied"                    # ... plus kpatches/ in a form: applied or v8

    [kernels.v8]
    kpatches = "v8"
    configs = ["default"]                   # optional: the configs it is built with (all)

    [kernels.own]
    patches = "my-patches"                  # ... or a patch set of one's own (a series file)

    [kernels.mine]
    source = "/src/linux"                   # a kernel tree, built as it is

    [kernels.v8]
    series = "v8.mbox"                      # a posted series (b4 am -o - writes one), on
    series_version = 8                      # Debian's source (or source = TREE); optional

    [configs]                               # kconfigs/ fragment sets
    default = ["base", "kvm", "mm", "faults"]
    debug = ["base", "kvm", "mm", "faults", "debug"]
    # a table names the command lines a config is booted with (default: all of them)
    novmattr = { fragments = ["base", "kvm", "mm", "faults", "novmattr"], cmdlines = ["default"] }
    # coverage = true: the kernel's coverage build (`gmemtest coverage`), tests one at a time,
    # each cell's coverage.json; the reports combine a kernel's cells (coverage/) and name the
    # lines the baseline's run ran and this one does not
    coverage = { fragments = ["base", "kvm", "mm", "faults"], coverage = true }

    [cmdlines]                              # kernel command lines
    on = ["kvm.gmem_in_place_conversion=1"]
    off = ["kvm.gmem_in_place_conversion=0"]
"""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmemtest.errors import BuildFailed, GmemtestError
from gmemtest.results import baseline as baseline_of
from gmemtest.results import cells as cells_of
from gmemtest.results import coverage, kcidb, render, report, runlog
from gmemtest.results.answer import Answer
from gmemtest.results.cells import CellResult, cell_id, slug
from gmemtest.results.shape import read_json
from gmemtest.testing import tunables
from gmemtest.testing.gcov import ENV as GCOV_ENV
from gmemtest.vmtier import kconfig, kernel, kernelspec, qemu
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.progress import Progress

from . import coverage as cov
from . import vmtest


@dataclass
class Matrix:
    kernels: dict[str, KernelSpec]
    configs: dict[str, tuple[str, ...]]
    cmdlines: dict[str, list[str]]
    pytest_args: list[str] | None = None  # None: qemu.parallelism()
    env: dict[str, str] = field(default_factory=dict)
    # config -> the command lines it is booted with, where not every one
    config_cmdlines: dict[str, list[str]] = field(default_factory=dict)
    # kernel -> the configs it is built with, where not every one
    kernel_configs: dict[str, list[str]] = field(default_factory=dict)
    coverage: frozenset[str] = frozenset()  # the configs whose cells measure coverage

    def cells(self) -> list[Cell]:
        return [Cell(k, spec.with_fragments(frags), c, m)
                for k, spec in self.kernels.items() for c, frags in self.configs.items()
                if c in self.kernel_configs.get(k, list(self.configs))
                for m in self.config_cmdlines.get(c, list(self.cmdlines))]


@dataclass(frozen=True)
class Cell:
    kernel_name: str
    spec: KernelSpec  # with the config's fragments
    config: str
    cmdline: str

    @property
    def id(self) -> str:
        return cell_id(self.kernel_name, self.config, self.cmdline)

    @property
    def slug(self) -> str:
        return slug(self.id)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GmemtestError(f"{where}: expected a list of strings")
    return list(value)


def _name(name: str, where: str) -> str:
    if not name or "/" in name or not name.isprintable():
        raise GmemtestError(f"{where}: a name must be printable, without '/': {name!r}")
    return name


def load(path: Path) -> Matrix:
    """Read and check a matrix file, every value's type and range; every mistake is one line
    naming its key, before any work."""
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except FileNotFoundError:
        raise GmemtestError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise GmemtestError(f"--config {path}: a directory, not a matrix file") from None
    except UnicodeDecodeError:
        raise GmemtestError(f"--config {path}: not a text file (a matrix is TOML)") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise GmemtestError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - {"kernels", "configs", "cmdlines", "pytest_args", "env"}
    if unknown:
        raise GmemtestError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected "
                            "kernels, configs, cmdlines, pytest_args, env)")
    for key in ("kernels", "configs", "cmdlines"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise GmemtestError(f"{path}: [{key}] is missing or empty")
    kernels: dict[str, KernelSpec] = {}
    kernel_configs: dict[str, list[str]] = {}
    for name, table in data["kernels"].items():
        where = f"{path}: [kernels.{_name(name, f'{path}: [kernels]')}]"
        if isinstance(table, dict) and "configs" in table:
            table = dict(table)
            kernel_configs[name] = _strings(table.pop("configs"), f"{where}.configs")
            unknown_configs = set(kernel_configs[name]) - set(data["configs"])
            if unknown_configs or not kernel_configs[name]:
                raise GmemtestError(f"{where}.configs: unknown config(s) "
                                    f"{', '.join(sorted(unknown_configs)) or '(none given)'} "
                                    f"(known: {', '.join(data['configs'])})")
        kernels[name] = kernelspec.from_table(name, table, where, path.parent)
    cmdlines = {_name(n, f"{path}: [cmdlines]"): _strings(v, f"{path}: cmdlines.{n}")
                for n, v in data["cmdlines"].items()}
    configs: dict[str, tuple[str, ...]] = {}
    config_cmdlines: dict[str, list[str]] = {}
    coverage: list[str] = []
    for name, value in data["configs"].items():
        where = f"{path}: configs.{_name(name, f'{path}: [configs]')}"
        if isinstance(value, dict):
            if set(value) - {"fragments", "cmdlines", "coverage"} or "fragments" not in value:
                raise GmemtestError(f"{where}: expected a list of fragments or a table with "
                                    "the keys fragments, cmdlines and coverage")
            if "coverage" in value:
                if not isinstance(value["coverage"], bool):
                    raise GmemtestError(f"{where}.coverage: expected true or false")
                if value["coverage"]:
                    coverage.append(name)
            if "cmdlines" in value:
                config_cmdlines[name] = _strings(value["cmdlines"], f"{where}.cmdlines")
                unknown_lines = set(config_cmdlines[name]) - set(cmdlines)
                if unknown_lines:
                    raise GmemtestError(f"{where}.cmdlines: unknown command line(s) "
                                        f"{', '.join(sorted(unknown_lines))} (known: "
                                        f"{', '.join(cmdlines)})")
            value = value["fragments"]
        configs[name] = tuple(_strings(value, where))
        try:
            kconfig.fragment_paths(list(configs[name]))
        except GmemtestError as e:
            raise GmemtestError(f"{where}: {e}") from None
    pytest_args = (_strings(data["pytest_args"], f"{path}: pytest_args")
                   if "pytest_args" in data else None)
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise GmemtestError(f"{path}: [env] must be a table of variables")
    env = {k: tunables.check(k, v, f"{path}: [env]") for k, v in env.items()}
    return Matrix(kernels, configs, cmdlines, pytest_args, env, config_cmdlines,
                  kernel_configs, frozenset(coverage))


def cell_list(matrix: Matrix) -> list[dict[str, Any]]:
    """Every cell, in order, with its stable id (``KERNEL/CONFIG/CMDLINE``): what
    ``--list`` prints for a CI engine to make a job of each."""
    return [{"id": c.id, "slug": c.slug, "kernel": c.kernel_name, "config": c.config,
             "cmdline": c.cmdline, "fragments": list(matrix.configs[c.config]),
             "cmdline_args": matrix.cmdlines[c.cmdline]} for c in matrix.cells()]


def pick(matrix: Matrix, cell: str) -> Cell:
    """The cell called ``cell``; one line naming the known ones otherwise."""
    for c in matrix.cells():
        if c.id == cell:
            return c
    raise GmemtestError(f"--cell {cell}: no such cell in the matrix (its cells: "
                        f"{', '.join(c.id for c in matrix.cells())})")


def run(matrix: Matrix, out: Path, *, limits: qemu.Limits, progress: Progress | None = None,
        cells: list[Cell] | None = None) -> list[CellResult]:
    """Build each (kernel, config) once and boot it once per command line, for every cell or
    the ones given; each cell's results go to out/cells/SLUG, with its record (cell.json)."""
    progress = progress or Progress()
    results: list[CellResult] = []
    builds: dict[tuple[str, str], kernel.Build | BuildFailed] = {}
    for cell in matrix.cells() if cells is None else cells:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        key = (cell.kernel_name, cell.config)
        fragments = list(matrix.configs[cell.config])
        if key not in builds:
            progress.phase(f"build {cell.kernel_name}/{cell.config}")
            try:
                builds[key] = (cov.coverage_build(cell.spec, progress)
                               if cell.config in matrix.coverage
                               else kernel.resolve(cell.spec, progress))
            except BuildFailed as e:
                builds[key] = e
        b = builds[key]
        if isinstance(b, BuildFailed):
            result = CellResult(cell.kernel_name, cell.config, cell.cmdline, None,
                                f"build failed: {b}", build_stage=b.stage,
                                fragments=fragments, started=started,
                                cmdline=matrix.cmdlines[cell.cmdline])
        else:
            progress.phase(f"cell {cell.id}", "booting")
            measured = cell.config in matrix.coverage
            pytest_args = qemu.parallelism() if matrix.pytest_args is None \
                else matrix.pytest_args
            env = matrix.env
            if measured:  # one test at a time, each one's counters kept
                pytest_args = ["-p", "no:xdist", *(matrix.pytest_args or [])]
                env = {**env, GCOV_ENV: "1"}
            cell_dir = out / "cells" / cell.slug
            r = qemu.boot(b, pytest_args, results=cell_dir,
                          cmdline=matrix.cmdlines[cell.cmdline], limits=limits, env=env)
            m = b.manifest
            result = CellResult(cell.kernel_name, cell.config, cell.cmdline,
                                report.evaluate(cell.id, r), build_seconds=b.seconds,
                                bzimage=str(b.bzimage), kernel=b.label,
                                cmdline=matrix.cmdlines[cell.cmdline],
                                source=(m.commit or m.version) if m else None,
                                patches=list(m.patches) if m else [], fragments=fragments,
                                started=started,
                                series=m.posted if m else None)
            if measured and result.ran:
                result.coverage = _measure_cell(cell, b, cell_dir, progress)
        cells_of.save(result, out / "cells" / cell.slug)
        results.append(result)
    progress.done("matrix", f"{len(results)} cells, {len(builds)} builds")
    return results


def _measure_cell(cell: Cell, build: kernel.Build, cell_dir: Path,
                  progress: Progress) -> dict[str, Any]:
    """A coverage cell's coverage.json and coverage.info; its headline, for cell.json."""
    progress.phase(f"cell {cell.id}", "reading its coverage")
    measured = cov.read_boots(build, [(cell.id, cell_dir)])
    assert build.source_path is not None
    doc = coverage.to_json(measured, cov.series_lines(cell.spec, build, progress), build.label)
    (cell_dir / "coverage.json").write_text(json.dumps(doc) + "\n")
    (cell_dir / "coverage.info").write_text(coverage.lcov(measured, build.source_path,
                                                          cell.slug))
    return coverage.headline_of(doc)


def coverage_of(results: list[tuple[CellResult, Path]], out: Path) -> dict[str, Any]:
    """The coverage cells' documents combined per kernel and config (each cell is one mode),
    written to out/coverage/KERNEL--CONFIG/: {KERNEL/CONFIG: headline, run lines, report}."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r, d in results:
        if r.coverage is not None and (d / "coverage.json").is_file():
            doc = read_json(d / "coverage.json", "a coverage document",
                            f"{d / 'coverage.json'}: gone")
            groups.setdefault(f"{r.kernel_name}/{r.config}", []).append(doc)
    section: dict[str, Any] = {}
    for name, docs in groups.items():
        doc = coverage.combine(docs)
        where = out / "coverage" / slug(name)
        where.mkdir(parents=True, exist_ok=True)
        (where / "coverage.json").write_text(json.dumps(doc) + "\n")
        (where / "coverage.md").write_text(coverage.markdown(doc))
        (where / "coverage.html").write_text(coverage.html_page(doc))
        section[name] = coverage.group_entry(doc, f"coverage/{slug(name)}/coverage.html")
    return section


def merge(dirs: list[Path], matrix: Matrix) -> list[tuple[CellResult, Path]]:
    """The results of cells run apart (each by ``--cell``), with their directories, in the
    matrix's order: every cell exactly once; one line for a directory that is not a cell's,
    a cell given twice, a cell the matrix does not have and a cell missing."""
    found: dict[str, tuple[CellResult, Path]] = {}
    for d in dirs:
        for cell_dir in _cell_dirs(d):
            r = cells_of.load(cell_dir)
            if r.id in found:
                raise GmemtestError(f"cell {r.id} was run twice: {found[r.id][1]} and "
                                    f"{cell_dir} (merge each cell's results once)")
            found[r.id] = (r, cell_dir)
    ids = [c.id for c in matrix.cells()]
    unknown = sorted(set(found) - set(ids))
    if unknown:
        raise GmemtestError(f"cell {unknown[0]} ({found[unknown[0]][1]}) is not in the matrix "
                            f"(its cells: {', '.join(ids)})")
    missing = [i for i in ids if i not in found]
    if missing:
        raise GmemtestError(f"cell {missing[0]} is missing: no results directory holds it "
                            f"({len(missing)} of {len(ids)} cells missing)")
    return [found[i] for i in ids]


def _cell_dirs(d: Path) -> list[Path]:
    """A cell's results directory, or every cell of a matrix run's output directory."""
    if (d / cells_of.CELL_FILE).exists() or not (d / "cells").is_dir():
        return [d]
    return sorted(p for p in (d / "cells").iterdir() if (p / cells_of.CELL_FILE).exists())


def not_run(results: list[CellResult]) -> str | None:
    """One line naming the cells that did not run their tests (None when all did)."""
    bad = [r for r in results if not r.ran]
    if not bad:
        return None
    return (f"{len(bad)} of {len(results)} cell(s) did not run their tests: "
            + "; ".join(f"{r.id}: {r.problem or (r.outcome.problem if r.outcome else '')}"
                        for r in bad))


def report_on(results: list[CellResult], out: Path, *, baseline: Path | None,
              kcidb_file: Path | None) -> Answer:
    """Write every report of ``results`` into ``out``, and the table; the exit status is 1
    when a cell failed (or, with a baseline, when something regressed against it), and 2,
    said first, when a cell did not run its tests: no verdict rests on it."""
    old = baseline_of.load_baseline(baseline) if baseline else None
    measured = coverage_of([(r, out / "cells" / r.slug) for r in results], out)
    if old is not None:
        for name, entry in measured.items():
            entry["previous"] = baseline_of.coverage_headline(old, name)
    render.write(results, out, coverage=measured)
    regr = baseline_of.regressions(json.loads((out / "matrix.json").read_text()), old) \
        if old else []
    if regr:
        render.write(results, out, regr, coverage=measured)
    if kcidb_file is not None:
        kcidb.write(results, kcidb_file)
    why = not_run(results)
    text = (render.table(results, regr, coverage.group_notes(measured))
            + f"\nreports: {out}/report.html, summary.md, junit.xml, matrix.ktap, *.ktap, "
            "matrix.json" + (f"; KCIDB: {kcidb_file}" if kcidb_file else ""))
    if why:
        return Answer(2, text, why)
    if old is not None:
        return Answer(1 if regr else 0, text)
    return Answer(0 if all(r.ok for r in results) else 1, text)


def main(config: Path, out: Path | None, baseline: Path | None, limits: qemu.Limits,
         pytest_args: list[str] | None = None, *, cell: str | None = None,
         list_cells: bool = False, kcidb_file: Path | None = None) -> Answer:
    """``--list``: print the cells as JSON. ``--cell ID``: build, boot and run that cell alone
    into OUT/cells/SLUG (no reports: ``gmemtest matrix merge`` makes them). Otherwise run every
    cell and write the reports."""
    matrix = load(config)
    if list_cells:
        return Answer(0, json.dumps(cell_list(matrix), indent=2))
    chosen = [pick(matrix, cell)] if cell else None
    if baseline:
        baseline_of.load_baseline(baseline)  # a bad baseline is an error before any build
    if pytest_args:
        matrix.pytest_args = pytest_args
    out = out or vmtest.results_root() / time.strftime("matrix-%Y%m%d-%H%M%S")
    if chosen is None and out.exists() and any(out.iterdir()):
        shutil.rmtree(out / "cells", ignore_errors=True)
    if chosen is not None:
        shutil.rmtree(out / "cells" / chosen[0].slug, ignore_errors=True)
    with (runlog.results_dir(out) if chosen is None else
          runlog.results_dir(out / "cells" / chosen[0].slug, log="matrix.log")):
        results = run(matrix, out, limits=limits, cells=chosen)
    if chosen is not None:
        text = f"cell {chosen[0].id}: {results[0].verdict()} ({out / 'cells' / chosen[0].slug})"
        if not results[0].ran:
            return Answer(2, text, not_run(results))
        return Answer(0 if results[0].ok else 1, text)
    return report_on(results, out, baseline=baseline, kcidb_file=kcidb_file)


def merge_main(dirs: list[Path], config: Path, out: Path, baseline: Path | None,
               kcidb_file: Path | None) -> Answer:
    """``gmemtest matrix merge``: the reports of cells run apart, as one run would write them
    (each cell's directory copied to OUT/cells/SLUG)."""
    matrix = load(config)
    merged = merge(dirs, matrix)
    if baseline:
        baseline_of.load_baseline(baseline)
    for r, src in merged:
        dest = out / "cells" / r.slug
        if src.resolve() != dest.resolve():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest)
    return report_on([r for r, _ in merged], out, baseline=baseline, kcidb_file=kcidb_file)
