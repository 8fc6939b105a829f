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

import html
import json
import re
import shutil
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kconfig, kernel, qemu, report, vmtest
from .errors import GmemtestError
from .progress import Progress


@dataclass(frozen=True)
class KernelSpec:
    """A kernel to build: Debian's source plus a patch set, or a tree as it is."""

    name: str
    src: Path | None  # None: Debian's linux-source-7.2
    patch_dir: Path | None  # None: no patches


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
        return f"{self.kernel.name}/{self.config}/{self.cmdline}"

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.id.replace("/", "--"))


@dataclass
class CellResult:
    cell: Cell
    outcome: report.Outcome | None  # None: the kernel did not build
    problem: str | None = None
    build_seconds: float | None = None
    bzimage: str | None = None
    kernel: str | None = None  # what was built: source version and patches
    cmdline: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome is not None and self.outcome.ok

    def verdict(self) -> str:
        return f"ERROR: {self.problem}" if self.outcome is None else self.outcome.verdict()

    def summary(self) -> dict[str, Any]:
        """What matrix.json records for the cell (and a baseline is compared with)."""
        o = self.outcome
        return {
            "kernel": self.cell.kernel.name, "config": self.cell.config,
            "cmdline": self.cell.cmdline, "ok": self.ok, "verdict": self.verdict(),
            "passed": o.passed if o else 0, "failed": o.failed if o else 0,
            "skipped": o.skipped if o else 0, "xfailed": o.xfailed if o else 0,
            "findings": [str(f) for f in o.findings] if o else [],
            "tests": dict(sorted(o.tests.items())) if o else {},
            "console": f"cells/{self.cell.slug}/console.log" if o else None,
            "ktap": f"{self.cell.slug}.ktap", "bzimage": self.bzimage, "built": self.kernel,
            "accel": o.run.accel if o else None,
            "build_seconds": self.build_seconds,
            "boot_seconds": o.run.boot_seconds if o else None,
            "run_seconds": round(o.run.seconds, 1) if o else None,
        }


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
        if not isinstance(spec, dict) or set(spec) - {"source", "patches"}:
            raise GmemtestError(f"{where}: expected the keys source and patches")
        source = spec.get("source", "debian")
        src = None if source == "debian" else (path.parent / source).resolve()
        if src is not None and not (src / "Makefile").is_file():
            raise GmemtestError(f"{where}: source {src} is not a kernel tree")
        patches = spec.get("patches", "kpatches" if src is None else False)
        patch_dir = None
        if patches is not False:
            patch_dir = kernel.KPATCHES if patches == "kpatches" else \
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


def run(matrix: Matrix, out: Path, *, limits: qemu.Limits,
        progress: Progress | None = None) -> list[CellResult]:
    """Build each (kernel, config) once, boot it once per command line."""
    progress = progress or Progress()
    results: list[CellResult] = []
    builds: dict[tuple[KernelSpec, str], kernel.Build | str] = {}
    for cell in matrix.cells():
        key = (cell.kernel, cell.config)
        if key not in builds:
            progress.phase(f"build {cell.kernel.name}/{cell.config}")
            try:
                builds[key] = kernel.build(
                    cell.kernel.src, patches=cell.kernel.patch_dir is not None,
                    patch_dir=cell.kernel.patch_dir or kernel.KPATCHES,
                    fragments=matrix.configs[cell.config], progress=progress)
            except GmemtestError as e:
                builds[key] = f"build failed: {e}"
        b = builds[key]
        if isinstance(b, str):
            results.append(CellResult(cell, None, b))
            continue
        progress.phase(f"cell {cell.id}", "booting")
        pytest_args = qemu.parallelism() if matrix.pytest_args is None else matrix.pytest_args
        r = qemu.boot(b.bzimage, pytest_args, results=out / "cells" / cell.slug,
                      cmdline=matrix.cmdlines[cell.cmdline], limits=limits,
                      env={**matrix.env, **vmtest.guest_env(b)})
        patches = f" + {len(b.source.patches)} patches" if b.source.patches else ""
        results.append(CellResult(cell, report.evaluate(cell.id, r), build_seconds=b.seconds,
                                  bzimage=str(b.bzimage),
                                  kernel=f"{b.source.commit or b.source.version}{patches}",
                                  cmdline=matrix.cmdlines[cell.cmdline]))
    progress.done("matrix", f"{len(results)} cells, {len(builds)} builds")
    return results


# -- reports ---------------------------------------------------------------------------------

def write(results: list[CellResult], out: Path, regressions: list[str] | None = None) -> None:
    """junit.xml, one KTAP per cell, summary.txt, summary.md, report.html and matrix.json."""
    out.mkdir(parents=True, exist_ok=True)
    _write_junit(results, out / "junit.xml")
    for r in results:
        ktap = out / "cells" / r.cell.slug / "results.ktap"
        text = ktap.read_text() if ktap.exists() else \
            f"KTAP version 1\n1..1\nnot ok 1 {r.cell.slug} # {r.verdict()}\n"
        (out / f"{r.cell.slug}.ktap").write_text(text)
    doc = {"generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cells": {r.cell.id: r.summary() for r in results},
           "regressions": regressions or []}
    (out / "matrix.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "summary.txt").write_text(table(results, regressions) + "\n")
    (out / "summary.md").write_text(markdown(results, regressions))
    (out / "report.html").write_text(html_page(results, regressions))


def _write_junit(results: list[CellResult], path: Path) -> None:
    suites = ET.Element("testsuites", name="gmemtest matrix")
    for r in results:
        s = r.summary()
        suite = ET.SubElement(suites, "testsuite", name=r.cell.id, tests="0", failures="0",
                              errors="0", skipped="0")
        junit = path.parent / "cells" / r.cell.slug / "junit.xml"
        if r.outcome is not None and junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                suite.append(case)
        health = ET.SubElement(suite, "testcase", classname="gmemtest", name="kernel-health")
        if not r.ok and (r.outcome is None or r.outcome.problem or r.outcome.findings):
            ET.SubElement(health, "error" if r.outcome is None or r.outcome.problem
                          else "failure", message=r.verdict()).text = "\n".join(s["findings"])
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
        suite.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


COLUMNS = ("cell", "passed", "failed", "skipped", "xfailed", "health", "verdict")


def _rows(results: list[CellResult]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        s = r.summary()
        rows.append((r.cell.id, str(s["passed"]), str(s["failed"]), str(s["skipped"]),
                     str(s["xfailed"]), str(len(s["findings"])) if r.outcome else "-",
                     "PASS" if r.ok else r.verdict()))
    return rows


def table(results: list[CellResult], regressions: list[str] | None = None) -> str:
    """The terminal table."""
    rows = [COLUMNS, *_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths, strict=False))) + "  " + row[-1]
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines += [f"regression: {x}" for x in regressions or []]
    return "\n".join(lines)


def markdown(results: list[CellResult], regressions: list[str] | None = None) -> str:
    lines = ["# gmemtest matrix", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
              for row in _rows(results)]
    for r in results:
        if r.outcome and r.outcome.findings:
            lines += ["", f"## {r.cell.id}: kernel health", ""]
            lines += [f"- `{f}`" for f in r.outcome.findings]
    if regressions:
        lines += ["", "## Regressions against the baseline", ""]
        lines += [f"- {x}" for x in regressions]
    return "\n".join(lines) + "\n"


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; }
th:first-child, td:first-child, td.verdict { text-align: left; }
tr.pass td.verdict { background: #dfd; } tr.fail td.verdict { background: #fdd; }
td.n0 { color: #aaa; } .regr { background: #fdd; padding: .5em; }
details { margin: .5em 0; } pre { background: #f6f6f6; padding: .5em; overflow-x: auto; }
"""


def html_page(results: list[CellResult], regressions: list[str] | None = None) -> str:
    """One self-contained page: the table, then per cell its findings, failures and skips."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in (*COLUMNS, "logs"))
    body = []
    for r, row in zip(results, _rows(results), strict=True):
        s = r.summary()
        cells = [f"<td><a href='#{e(r.cell.slug)}'>{e(row[0])}</a></td>"]
        cells += [f"<td class='{'n0' if v == '0' else ''}'>{e(v)}</td>" for v in row[1:-1]]
        cells.append(f"<td class='verdict'>{e(row[-1])}</td>")
        links = [f"<a href='{e(s['ktap'])}'>ktap</a>"]
        if s["console"]:
            links.insert(0, f"<a href='{e(s['console'])}'>console</a>")
        cells.append(f"<td>{' '.join(links)}</td>")
        body.append(f"<tr class='{'pass' if r.ok else 'fail'}'>{''.join(cells)}</tr>")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>gmemtest matrix</title>"
             f"<style>{STYLE}</style></head><body><h1>gmemtest matrix</h1>",
             f"<p>{e(time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}, "
             f"{len(results)} cells</p>"]
    if regressions:
        parts.append("<div class='regr'><b>Regressions against the baseline</b><ul>"
                     + "".join(f"<li>{e(x)}</li>" for x in regressions) + "</ul></div>")
    parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    for r in results:
        s = r.summary()
        parts.append(f"<h2 id='{e(r.cell.slug)}'>{e(r.cell.id)}</h2><p>{e(r.verdict())}</p>")
        if s["built"]:
            parts.append(f"<p>kernel {e(s['built'])}, command line <code>"
                         f"{e(' '.join(r.cmdline))}</code>, {e(s['accel'] or '')}</p>")
        o = r.outcome
        if o is None:
            continue
        if o.findings:
            parts.append("<h3>Kernel health</h3><pre>"
                         + e("\n".join(str(f) for f in o.findings)) + "</pre>")
        if o.failures:
            parts.append("<h3>Failed</h3><ul>"
                         + "".join(f"<li>{e(n)}<br><code>{e(why)}</code></li>"
                                   for n, why in o.failures.items()) + "</ul>")
        if o.skip_reasons:
            items = "".join(f"<li>{n} &times; {e(reason)}</li>"
                            for reason, n in o.skip_reasons.most_common())
            parts.append(f"<details><summary>{o.skipped} skipped</summary><ul>{items}</ul>"
                         "</details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- baseline --------------------------------------------------------------------------------

def regressions(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """What got worse since ``baseline`` (both matrix.json documents): a cell that passed and
    no longer does or is gone, a test that passed and now fails, skips or is gone, and a kernel
    health finding in a cell that had none."""
    found = []
    for cid, old in baseline.get("cells", {}).items():
        new = current.get("cells", {}).get(cid)
        if new is None:
            found.append(f"{cid}: cell missing from this run")
            continue
        if old.get("ok") and not new.get("ok"):
            found.append(f"{cid}: was PASS, now {new.get('verdict')}")
        if new.get("findings") and not old.get("findings"):
            found.append(f"{cid}: kernel health: {new['findings'][0]}")
        for test, state in old.get("tests", {}).items():
            now = new.get("tests", {}).get(test, "missing")
            if state == "passed" and now != "passed":
                found.append(f"{cid}: {test}: passed, now {now}")
    return found


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GmemtestError(f"--baseline {path}: no such file (an earlier run's "
                            "matrix.json)") from None
    except json.JSONDecodeError as e:
        raise GmemtestError(f"--baseline {path}: not a matrix.json: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), dict):
        raise GmemtestError(f"--baseline {path}: not a matrix.json (no cells)")
    return doc


def main(config: Path, out: Path | None, baseline: Path | None, limits: qemu.Limits,
         pytest_args: list[str] | None = None) -> int:
    """Run the matrix, write the reports, print the table; the exit status is 1 when a cell
    failed (or, with a baseline, when something regressed against it)."""
    matrix = load(config)
    old = load_baseline(baseline) if baseline else None
    if pytest_args:
        matrix.pytest_args = pytest_args
    out = out or vmtest.results_root() / time.strftime("matrix-%Y%m%d-%H%M%S")
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out / "cells", ignore_errors=True)
    results = run(matrix, out, limits=limits)
    write(results, out)
    regr = regressions(json.loads((out / "matrix.json").read_text()), old) if old else []
    if regr:
        write(results, out, regr)
    print(table(results, regr))
    print(f"reports: {out}/report.html, summary.md, junit.xml, *.ktap, matrix.json")
    if old is not None:
        return 1 if regr else 0
    return 0 if all(r.ok for r in results) else 1
