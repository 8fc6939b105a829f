"""`gmemtest matrix`: the nightly job over kernels x kconfig fragment sets x kernel command lines.

Each (kernel, fragment set) is built once and booted once per command line. The results of the
cells are merged into one JUnit XML (a testsuite per cell), one KTAP file per cell, a terminal
table, Markdown, a self-contained HTML page and ``matrix.json``, which a later run takes as its
``--baseline`` to find regressions.

The configuration is TOML::

    pytest_args = ["-n", "auto"]            # optional; what the guest's pytest is given
                                            # (default: qemu.parallelism())

    [env]                                   # optional; the suite's knobs (qemu.TUNABLES)
    GMEMTEST_FUZZ = "long"

    [kernels.debian-kpatches]
    source = "debian"                       # Debian's linux-source-7.2 ...
    patches = "kpatches"                    # ... plus a patch set (a dir with a series file)

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

from gmemtest.errors import GmemtestError
from gmemtest.results import baseline as baseline_of
from gmemtest.results import cells as cells_of
from gmemtest.results import kcidb, render, report, runlog
from gmemtest.results.cells import CellResult, cell_id, slug
from gmemtest.vmtier import checkout, kconfig, kernel, qemu, series
from gmemtest.vmtier.progress import Progress

from . import vmtest


@dataclass(frozen=True)
class KernelSpec:
    """A kernel to build: Debian's source plus a patch set, a tree as it is, or a posted series
    (an mbox) applied onto either."""

    name: str
    src: Path | None  # None: Debian's linux-source-7.2
    patch_dir: Path | None  # None: no patches
    series: Path | None = None  # a posted series' mbox, applied with git am onto src
    series_version: int | None = None


@dataclass
class Matrix:
    kernels: list[KernelSpec]
    configs: dict[str, list[str]]
    cmdlines: dict[str, list[str]]
    pytest_args: list[str] | None = None  # None: qemu.parallelism()
    env: dict[str, str] = field(default_factory=dict)
    # config -> the command lines it is booted with, where not every one
    config_cmdlines: dict[str, list[str]] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        return [Cell(k, c, m) for k in self.kernels for c in self.configs
                for m in self.config_cmdlines.get(c, list(self.cmdlines))]


@dataclass(frozen=True)
class Cell:
    kernel: KernelSpec
    config: str
    cmdline: str

    @property
    def id(self) -> str:
        return cell_id(self.kernel.name, self.config, self.cmdline)

    @property
    def slug(self) -> str:
        return slug(self.id)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise GmemtestError(f"{where}: expected a list of strings")
    return list(value)


def load(path: Path) -> Matrix:
    """Read and check a matrix file; every mistake is named with its key."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GmemtestError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise GmemtestError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - {"kernels", "configs", "cmdlines", "pytest_args", "env"}
    if unknown:
        raise GmemtestError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (expected "
                            "kernels, configs, cmdlines, pytest_args, env)")
    for key in ("kernels", "configs", "cmdlines"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise GmemtestError(f"{path}: [{key}] is missing or empty")
    kernels = []
    for name, spec in data["kernels"].items():
        where = f"{path}: [kernels.{name}]"
        keys = {"source", "patches", "series", "series_version"}
        if not isinstance(spec, dict) or set(spec) - keys:
            raise GmemtestError(f"{where}: expected the keys {', '.join(sorted(keys))}")
        source = spec.get("source", "debian")
        src = None if source == "debian" else (path.parent / source).resolve()
        if src is not None and not (src / "Makefile").is_file():
            raise GmemtestError(f"{where}: source {src} is not a kernel tree")
        mbox = (path.parent / str(spec["series"])).resolve() if "series" in spec else None
        if mbox is not None:
            if "patches" in spec:
                raise GmemtestError(f"{where}: a series is the patches: drop patches")
            if not mbox.is_file():
                raise GmemtestError(f"{where}: series {mbox}: no such file")
            kernels.append(KernelSpec(name, src, None, mbox, spec.get("series_version")))
            continue
        patches = spec.get("patches", "kpatches" if src is None else False)
        patch_dir = None
        if patches is not False:
            patch_dir = checkout.KPATCHES if patches == "kpatches" else \
                (path.parent / str(patches)).resolve()
            if not (patch_dir / "series").is_file():
                raise GmemtestError(f"{where}: patches {patch_dir} has no series file")
        kernels.append(KernelSpec(name, src, patch_dir))
    cmdlines = {n: _strings(v, f"{path}: cmdlines.{n}") for n, v in data["cmdlines"].items()}
    configs: dict[str, list[str]] = {}
    config_cmdlines: dict[str, list[str]] = {}
    for name, value in data["configs"].items():
        where = f"{path}: configs.{name}"
        if isinstance(value, dict):
            if set(value) - {"fragments", "cmdlines"} or "fragments" not in value:
                raise GmemtestError(f"{where}: expected a list of fragments or a table with "
                                    "the keys fragments and cmdlines")
            if "cmdlines" in value:
                config_cmdlines[name] = _strings(value["cmdlines"], f"{where}.cmdlines")
                unknown_lines = set(config_cmdlines[name]) - set(cmdlines)
                if unknown_lines:
                    raise GmemtestError(f"{where}.cmdlines: unknown command line(s) "
                                        f"{', '.join(sorted(unknown_lines))} (known: "
                                        f"{', '.join(cmdlines)})")
            value = value["fragments"]
        configs[name] = _strings(value, where)
        try:
            kconfig.fragment_paths(configs[name])
        except GmemtestError as e:
            raise GmemtestError(f"{where}: {e}") from None
    pytest_args = (_strings(data["pytest_args"], f"{path}: pytest_args")
                   if "pytest_args" in data else None)
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise GmemtestError(f"{path}: [env] must map variable names to strings")
    if set(env) - set(qemu.TUNABLES):
        raise GmemtestError(f"{path}: [env]: unknown variable(s) "
                            f"{', '.join(sorted(set(env) - set(qemu.TUNABLES)))} (expected "
                            f"{', '.join(qemu.TUNABLES)})")
    return Matrix(kernels, configs, cmdlines, pytest_args, env, config_cmdlines)


def cell_list(matrix: Matrix) -> list[dict[str, Any]]:
    """Every cell, in order, with its stable id (``KERNEL/CONFIG/CMDLINE``): what
    ``--list`` prints for a CI engine to make a job of each."""
    return [{"id": c.id, "slug": c.slug, "kernel": c.kernel.name, "config": c.config,
             "cmdline": c.cmdline, "fragments": matrix.configs[c.config],
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
    builds: dict[tuple[KernelSpec, str], kernel.Build | str] = {}
    for cell in matrix.cells() if cells is None else cells:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        key = (cell.kernel, cell.config)
        fragments = matrix.configs[cell.config]
        if key not in builds:
            progress.phase(f"build {cell.kernel.name}/{cell.config}")
            try:
                spec = cell.kernel
                src = series.tree(spec.series, version=spec.series_version, src=spec.src,
                                  progress=progress) if spec.series else spec.src
                builds[key] = kernel.build(
                    src, patches=spec.patch_dir is not None,
                    patch_dir=spec.patch_dir or checkout.KPATCHES,
                    fragments=fragments, progress=progress)
            except GmemtestError as e:
                builds[key] = f"build failed: {e}"
        b = builds[key]
        if isinstance(b, str):
            result = CellResult(cell.kernel.name, cell.config, cell.cmdline, None, b,
                                fragments=fragments, started=started,
                                cmdline=matrix.cmdlines[cell.cmdline])
        else:
            progress.phase(f"cell {cell.id}", "booting")
            pytest_args = qemu.parallelism() if matrix.pytest_args is None \
                else matrix.pytest_args
            r = qemu.boot(b.bzimage, pytest_args, results=out / "cells" / cell.slug,
                          cmdline=matrix.cmdlines[cell.cmdline], limits=limits,
                          env={**matrix.env, **vmtest.guest_env(b)})
            patches = f" + {len(b.source.patches)} patches" if b.source.patches else ""
            if b.source.series:
                posted = b.source.series["series"]
                patches = (f" + series v{posted['version']} \"{posted['subject']}\" "
                           f"({posted['count']} patches, <{posted['msgid']}>)")
            result = CellResult(cell.kernel.name, cell.config, cell.cmdline,
                                report.evaluate(cell.id, r), build_seconds=b.seconds,
                                bzimage=str(b.bzimage),
                                kernel=f"{b.source.commit or b.source.version}{patches}",
                                cmdline=matrix.cmdlines[cell.cmdline],
                                source=b.source.commit or b.source.version,
                                patches=list(b.source.patches), fragments=fragments,
                                started=started,
                                series=b.source.series["series"] if b.source.series else None)
        cells_of.save(result, out / "cells" / cell.slug)
        results.append(result)
    progress.done("matrix", f"{len(results)} cells, {len(builds)} builds")
    return results


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


def report_on(results: list[CellResult], out: Path, *, baseline: Path | None,
              kcidb_file: Path | None) -> int:
    """Write every report of ``results`` into ``out``, print the table; the exit status is 1
    when a cell failed (or, with a baseline, when something regressed against it)."""
    old = baseline_of.load_baseline(baseline) if baseline else None
    render.write(results, out)
    regr = baseline_of.regressions(json.loads((out / "matrix.json").read_text()), old) \
        if old else []
    if regr:
        render.write(results, out, regr)
    if kcidb_file is not None:
        kcidb.write(results, kcidb_file)
    print(render.table(results, regr))
    print(f"reports: {out}/report.html, summary.md, junit.xml, matrix.ktap, *.ktap, "
          "matrix.json" + (f"; KCIDB: {kcidb_file}" if kcidb_file else ""))
    if old is not None:
        return 1 if regr else 0
    return 0 if all(r.ok for r in results) else 1


def main(config: Path, out: Path | None, baseline: Path | None, limits: qemu.Limits,
         pytest_args: list[str] | None = None, *, cell: str | None = None,
         list_cells: bool = False, kcidb_file: Path | None = None) -> int:
    """``--list``: print the cells as JSON. ``--cell ID``: build, boot and run that cell alone
    into OUT/cells/SLUG (no reports: ``gmemtest matrix merge`` makes them). Otherwise run every
    cell and write the reports."""
    matrix = load(config)
    if list_cells:
        print(json.dumps(cell_list(matrix), indent=2))
        return 0
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
    with runlog.attached(out / ("gmemtest.log" if chosen is None else
                                f"cells/{chosen[0].slug}/matrix.log")):
        results = run(matrix, out, limits=limits, cells=chosen)
    if chosen is not None:
        print(f"cell {chosen[0].id}: {results[0].verdict()} ({out / 'cells' / chosen[0].slug})")
        return 0 if results[0].ok else 1
    return report_on(results, out, baseline=baseline, kcidb_file=kcidb_file)


def merge_main(dirs: list[Path], config: Path, out: Path, baseline: Path | None,
               kcidb_file: Path | None) -> int:
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
