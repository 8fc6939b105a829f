"""`gmemtest bench`: gmemtest against the upstream KVM selftests, and micro-benchmarks, in one
boot of one kernel.

Host side: the kernel build (warm rebuild after touching virt/kvm/guest_memfd.c; a cold build
with ``--cold``), the selftests and convert_loop.c built from the same tree and headers, one
boot running vmimages/bench/test_bench.py, and the report (terminal table, Markdown, JSON) with
the machine, accelerator and kernel recorded. Numbers are what this run measured.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmemtest.cache import cache_dir
from gmemtest.errors import GmemtestError
from gmemtest.results import phases, report
from gmemtest.vmtier import kernel, pycache, qemu, series
from gmemtest.vmtier.checkout import CHECKOUT
from gmemtest.vmtier.kernelspec import Debian, KernelSpec, Posted, Tree
from gmemtest.vmtier.progress import Progress

from . import affected, vmtest
from . import coverage as cov


@dataclass(frozen=True)
class Target:
    """One figure's limit on this machine (TCG, 2 cores), from the issues that asked for it."""

    label: str
    limit: float
    unit: str  # "x" (a ratio), "s", "%" (a share) or "" (a count)

    def shown(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.0%}"
        if self.unit == "x":
            return f"{value:.2f}x"
        return f"{value:g} s" if self.unit == "s" else f"{value:g}"

    def row(self, value: float, met: bool | None = None) -> list[str]:
        ok = value <= self.limit if met is None else met
        return [self.label, self.shown(self.limit), self.shown(value), "yes" if ok else "no"]


TARGETS = {
    "equivalents_ratio": Target("gmemtest equivalents / selftests", 0.7, "x"),
    "conversion_ratio_4k": Target("C / Python conversion round trips (4K)", 1.6, "x"),
    "objects": Target("kernel objects, default fragments", 850, ""),
    "parallel_ratio": Target("main job suites side by side / one at a time", 0.65, "x"),
    "first_boot_ratio": Target("first boot's suites / warm boot's", 1.2, "x"),
    "boot_to_first_result": Target("QEMU start to first result (main job boot)", 3.0, "s"),
    "collection_share": Target("collecting the suite / QEMU start to first result", 0.10, "%"),
    "bench_first_result": Target("QEMU start to first result (bench boot)", 3.0, "s"),
    "edit_loop": Target("edit -> verdict of the covering tests, both modes", 15.0, "s"),
    "edit_loop_share": Target("... / the same with the whole suite", 0.25, "x"),
    "warm_rebuild": Target("rebuild after touching guest_memfd.c", 60.0, "s"),
}


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return {"cpu": model.group(1) if model else platform.processor(),
            "cores": os.cpu_count(), "memory_gib": round(int(mem.group(1)) / 2**20, 1)
            if mem else None, "host_kernel": platform.release(),
            # the venv's interpreter, which the guest runs too (see scripts/bootstrap)
            "python": f"{platform.python_version()} "
                      f"({os.path.realpath(getattr(sys, '_base_executable', sys.executable))})"}


def build_loop(b: kernel.Build, out: Path) -> Path:
    """convert_loop.c against the kernel's own uapi headers."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise GmemtestError("gcc not found: run scripts/bootstrap --vm")
    binary = out / "convert_loop"
    proc = subprocess.run([gcc, "-O2", "-Wall", "-isystem", str(b.headers), "-o", str(binary),
                           str(CHECKOUT / "vmimages/bench/convert_loop.c")],
                          capture_output=True, text=True)
    if proc.returncode:
        raise GmemtestError(f"convert_loop.c did not build against {b.headers}: "
                            f"{proc.stderr.strip().splitlines()[:1]}")
    return binary


def cold_build(spec: KernelSpec, progress: Progress) -> float:
    """A build in a fresh directory with ccache off; the directory is removed after."""
    b = kernel.resolve(spec, progress, fresh=True)
    if b.dir is not None:
        shutil.rmtree(b.dir, ignore_errors=True)
    return b.seconds


def run(spec: KernelSpec, *, cmdline: list[str], seconds: float, cold: bool, out: Path,
        limits: qemu.Limits, edit_loop_only: bool = False) -> dict[str, Any]:
    progress = Progress()
    out.mkdir(parents=True, exist_ok=True)
    # An edit loop boots both modes, each with its own command line: no one to record.
    result: dict[str, Any] = {"machine": machine(),
                              **({} if edit_loop_only else {"cmdline": cmdline})}
    b = kernel.resolve(spec, progress)
    if b.source_path is None or b.manifest is None:
        raise GmemtestError(f"{b.label}: bench builds its kernel (name a source, not a "
                            "built kernel)")
    if edit_loop_only:
        result.update(kernel=b.label, patches=list(b.manifest.patches),
                      edit_loop=edit_loop(spec, out / "edit-loop", limits, progress))
        return _written(result, out, progress)
    if cold:
        result["cold_build_seconds"] = round(cold_build(spec, progress), 1)
    (b.source_path / "virt/kvm/guest_memfd.c").touch()
    warm = kernel.resolve(spec, progress)
    assert warm.manifest is not None
    result["warm_rebuild_seconds"] = round(warm.seconds, 1)
    result["kernel"] = warm.label
    result["patches"] = list(warm.manifest.patches)
    result["objects_cold"] = warm.manifest.objects_cold
    result.update(main_job_suites(warm, out, limits, progress))
    result["edit_loop"] = edit_loop(spec, out / "edit-loop", limits, progress)
    selftests = warm.kselftests
    if selftests is None:
        raise GmemtestError(f"{warm.label}: its build has no KVM selftests")
    loop = build_loop(warm, out)
    progress.phase("bench", f"booting {warm.bzimage.name} with {' '.join(cmdline)}")
    r = qemu.boot(warm, ["-q", "-p", "no:xdist", "vmimages/bench/test_bench.py"],
                  results=out / "guest", cmdline=cmdline, limits=limits,
                  env={"GMEMTEST_SELFTESTS": str(selftests.root), "GMEMTEST_BENCH_LOOP": str(loop),
                       "GMEMTEST_BENCH_SECONDS": str(seconds)})
    outcome = report.evaluate("bench", r)
    if not outcome.ok:
        raise GmemtestError(f"the benchmark boot failed: {outcome.verdict()} "
                            f"(console log: {r.console})")
    guest = json.loads((out / "guest/bench-guest.json").read_text())
    result["bench_boot_pieces"] = phases.pieces(out / "guest", r.boot_seconds or 0.0)
    console = r.console.read_text(errors="replace")
    init = re.search(r"gmemtest-init: start ([\d.]+)", console)
    result["accel"] = r.accel
    result["boot_to_init_seconds"] = round(r.boot_seconds or 0, 2)
    if init and "first_test_uptime" in guest:
        result["boot_to_first_test_seconds"] = round(
            (r.boot_seconds or 0) + guest["first_test_uptime"] - float(init.group(1)), 2)
    result.update({k: v for k, v in guest.items() if k != "first_test_uptime"})
    return _written(result, out, progress)


def _written(result: dict[str, Any], out: Path, progress: Progress) -> dict[str, Any]:
    progress.done("bench", str(out))
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(markdown(result))
    return result


def main_job_suites(b: kernel.Build, out: Path, limits: qemu.Limits,
                    progress: Progress) -> dict[str, Any]:
    """The main job's boots and suites three times, back to back: side by side right after
    filling an empty guest bytecode cache (a first boot), side by side again (warm), and one
    at a time (serial); and where the warm boot's time before its first test went."""
    shutil.rmtree(pycache.prefix(), ignore_errors=True)
    t0 = time.monotonic()
    pycache.fill_once()
    fill = time.monotonic() - t0
    boots = vmtest.modes(b)
    walls: dict[str, float] = {}
    warm_on: report.BootReport | None = None
    for tag, at_once in (("first", None), ("warm", None), ("serial", 1)):
        progress.phase("bench", f"main job suites: {tag} ({len(boots)} boots)")
        start = time.monotonic()
        outcomes = vmtest.run_modes(b, qemu.parallelism(), limits=limits, progress=progress,
                                    stamp=tag, boots=boots, at_once=at_once,
                                    root=out / "suites")
        walls[tag] = round(time.monotonic() - start, 1)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise GmemtestError(f"the benchmark's {tag} suites failed: {bad[0].verdict()} "
                                f"(results: {out / 'suites'})")
        if tag == "warm":
            warm_on = outcomes[0]
    assert warm_on is not None and warm_on.run is not None
    return {"pycache_fill_seconds": round(fill, 1), "suites_wall_seconds": walls,
            "suite_boots_side_by_side": qemu.boots_at_once(len(boots)),
            "warm_boot_pieces": phases.pieces(warm_on.run.results,
                                              warm_on.run.boot_seconds or 0.0)}


# The function the edit loop edits: which of KVM's mappings a hole punch or a memory failure
# zaps (patches 10 and 17), run by the tests that punch holes.
EDITED = ("virt/kvm/guest_memfd.c", "kvm_gmem_get_invalidate_filter")


def developer_tree(spec: KernelSpec, progress: Progress) -> Path:
    """The series of ``spec`` as a developer's git tree (a series tree of the cache: the base,
    then a commit per patch)."""
    if isinstance(spec.source, Posted):
        return series.apply(spec.source.series, *kernel.base_of(spec.source, progress),
                            progress)
    if spec.patches is None or not isinstance(spec.source, Debian):
        raise GmemtestError(f"{spec.label()}: the edit loop needs a series to edit (kpatches, "
                            "a patch set or a posted series on Debian's source)")
    mbox = cache_dir("series") / f"{spec.patches.digest[:16]}.mbox"
    mbox.write_bytes(b"".join(p.read_bytes() for p in spec.patches.patches))
    posted = series.read(mbox)
    base = kernel.prepare(KernelSpec(spec.source), progress)
    return series.apply(posted, base, spec.source.label(), progress)


def _edit(path: Path, function: str, statement: str) -> str:
    """Put ``statement`` first in ``function``'s body; returns the file as it was."""
    text = path.read_text()
    start, _ = affected.functions(text)[function]
    lines = text.splitlines(keepends=True)
    brace = next(i for i in range(start - 1, len(lines)) if lines[i].rstrip() == "{")
    lines.insert(brace + 1, f"\t{statement}\n")
    tmp = path.with_suffix(".gmemtest-edit")
    tmp.write_text("".join(lines))
    tmp.replace(path)  # a new file: the tree's files may be hard links
    return text


def _restore(path: Path, text: str) -> None:
    tmp = path.with_suffix(".gmemtest-edit")
    tmp.write_text(text)
    tmp.replace(path)


def edit_loop(spec: KernelSpec, out: Path, limits: qemu.Limits,
              progress: Progress) -> dict[str, Any]:
    """Edit one function of guest_memfd.c in a developer's tree of the series, then the
    verdict of the tests covering it in both modes (`vm-test --affected HEAD`: selection,
    rebuild, boots), next to the same edit with the whole suite. The tree's coverage map is
    made first if it has none (`gmemtest coverage`), and the tree built and booted once, so
    that both loops start warm."""
    tree = developer_tree(spec, progress)
    at = KernelSpec(Tree(tree), None, spec.fragments)
    if not cov.map_path(tree).is_file() and spec.patches is not None \
            and cov.adopt_map(kernel.prepare(spec, progress), tree):
        progress.phase("bench", f"the coverage map of {spec.label()} serves {tree}: "
                       "the files it measured are the same")
    if not cov.map_path(tree).is_file():
        progress.phase("bench", f"the coverage map of {tree} (once)")
        m = cov.measure(at, [], limits=limits, progress=progress, stamp="map",
                        root=out / "map")
        cov.save_map(m)
    file, function = EDITED
    path = tree / file
    result: dict[str, Any] = {"edited": f"{file}: {function}()"}
    vmtest.run_modes(kernel.resolve(at, progress), ["-q", "tests/test_abi.py"], limits=limits,
                     progress=progress, stamp="warm", root=out / "loop")
    for tag, statement in (("affected", "barrier();"), ("whole", "barrier(); barrier();")):
        original = _edit(path, function, statement)
        try:
            t0 = time.monotonic()
            pytest_args = qemu.parallelism()
            if tag == "affected":
                sel = affected.select(tree, "HEAD")
                if sel.whole is not None:
                    raise GmemtestError(f"the edit of {function}() picked the whole suite: "
                                        f"{sel.whole}")
                pytest_args = [*sel.tests, *qemu.parallelism()]
                result["picked"] = len(sel.tests)
                result["why"] = sel.describe()
            b = kernel.resolve(at, progress)
            outcomes = vmtest.run_modes(b, pytest_args, limits=limits, progress=progress,
                                        stamp=tag, root=out / "loop")
            result[f"{tag}_seconds"] = round(time.monotonic() - t0, 1)
            result[f"{tag}_rebuild_seconds"] = round(b.seconds, 1)
            result[f"{tag}_tests"] = sum(len(o.results) for o in outcomes)
            bad = [o for o in outcomes if not o.ok]
            if bad:
                raise GmemtestError(f"the edit loop's {tag} run failed: {bad[0].verdict()}")
        finally:
            _restore(path, original)
    kernel.resolve(at, progress)  # the tree as it was, built
    return result


def _rate(rows: list[dict[str, Any]]) -> dict[int, float]:
    return {r["size"]: r["round_trips"] / r["seconds"] for r in rows}


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n >> shift}{unit}"
    return str(n)


def tables(r: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table of the report."""
    m = r["machine"]
    out = [("Run", ["what", "value"], [
        ["machine", f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"],
        *([["accelerator", r["accel"]]] if "accel" in r else []),
        ["kernel", r["kernel"]],  # its label says the patch set and how many patches
        *([["command line", " ".join(r["cmdline"])]] if "cmdline" in r else []),
        *([["python (host and guest)", m["python"]]] if "python" in m else [])])]
    comp = r.get("comparison", [])
    rows = [[c["selftest"], f"{c['selftest_seconds']:.2f}", f"{c['gmemtest_seconds']:.2f}",
             f"{c['gmemtest_seconds'] / c['selftest_seconds']:.1f}x"
             if c["selftest_seconds"] else "-",
             f"{c['selftest_status']}/{c['gmemtest_status']}"] for c in comp]
    if comp:
        st = sum(c["selftest_seconds"] for c in comp)
        gt = sum(c["gmemtest_seconds"] for c in comp)
        rows.append(["total", f"{st:.2f}", f"{gt:.2f}", f"{gt / st:.1f}x", ""])
    if rows:
        out.append(("Selftests against gmemtest (wall seconds, fresh process each)",
                    ["upstream selftest", "selftest s", "gmemtest s", "ratio", "exit (C/py)"],
                    rows))
    conv = r.get("conversion")
    if conv:
        py, c = _rate(conv["python"]), _rate(conv["c"])
        out.append((f"Conversion round trips per second (via {conv['via']})",
                    ["size", "Python", "C", "C/Python"],
                    [[_size(s), f"{py[s]:.0f}", f"{c[s]:.0f}", f"{c[s] / py[s]:.2f}x"]
                     for s in py if s in c]))
    other = []
    if "agent" in r:
        other.append(["guest agent accesses (KVM_RUN exits) per second",
                      f"{r['agent']['accesses'] / r['agent']['seconds']:.0f}"])
    for key, label in (("cold_build_seconds", "cold kernel build, ccache off (s)"),
                       ("warm_rebuild_seconds", "rebuild after touching guest_memfd.c (s)"),
                       ("boot_to_init_seconds", "QEMU start to the guest init (s)"),
                       ("boot_to_first_test_seconds", "QEMU start to the first test (s)")):
        if key in r:
            other.append([label, str(r[key])])
    fixed = r.get("fixed_costs", {})
    for key in ("python_start_seconds", "import_gmemtest_seconds",
                "collect_all_tests_seconds"):
        if key in fixed:
            other.append([f"guest: {key.removesuffix('_seconds').replace('_', ' ')} (s)",
                          str(fixed[key])])
    walls = r.get("suites_wall_seconds")
    if walls:
        other += [["main job suites, first boot after filling the bytecode cache (wall s)",
                   str(walls["first"])],
                  ["main job suites, warm (wall s)", str(walls["warm"])],
                  ["main job suites, one boot at a time (wall s)", str(walls["serial"])],
                  ["filling the guest bytecode cache from empty (s)",
                   str(r["pycache_fill_seconds"])]]
    if "objects_cold" in r:
        other.append(["kernel objects compiled from nothing", str(r["objects_cold"])])
    if other:
        out.append(("Other measurements", ["what", "value"], other))
    warm_p, bench_p = r.get("warm_boot_pieces"), r.get("bench_boot_pieces")
    if warm_p or bench_p:
        names = [*phases.PIECES, "to first test", "to first result"]
        out.append(("QEMU start to the first test, piece by piece (s)",
                     ["piece", "main job boot (whole suite)", "bench boot (one module)"],
                     [[n, str((warm_p or {}).get(n, "-")), str((bench_p or {}).get(n, "-"))]
                      for n in names]))
    loop = r.get("edit_loop")
    if loop:
        out.append((f"Edit one function ({loop['edited']}) -> verdict, both modes, warm (s)",
                    ["tests run", "wall s", "of which the rebuild", "tests (both modes)"],
                    [[f"the {loop['picked']} covering it ({loop['why']})",
                      str(loop["affected_seconds"]), str(loop["affected_rebuild_seconds"]),
                      str(loop["affected_tests"])],
                     ["the whole suite", str(loop["whole_seconds"]),
                      str(loop["whole_rebuild_seconds"]), str(loop["whole_tests"])]]))
    out.append(("Targets", ["target", "limit", "measured", "met"], targets(r)))
    return out


def targets(r: dict[str, Any]) -> list[list[str]]:
    rows = []
    comp = r.get("comparison", [])
    if comp:
        ratio = sum(c["gmemtest_seconds"] for c in comp) / \
            sum(c["selftest_seconds"] for c in comp)
        row = TARGETS["equivalents_ratio"].row(ratio)
        if any(c["gmemtest_status"] or c["selftest_status"] for c in comp):
            row[-1] = "no: a side exited non-zero"
        rows.append(row)
    conv = r.get("conversion")
    if conv:
        py, c = _rate(conv["python"]), _rate(conv["c"])
        rows.append(TARGETS["conversion_ratio_4k"].row(c[4096] / py[4096]))
    if "objects_cold" in r:
        rows.append(TARGETS["objects"].row(r["objects_cold"]))
    walls = r.get("suites_wall_seconds")
    if walls:
        rows.append(TARGETS["parallel_ratio"].row(walls["warm"] / walls["serial"]))
        rows.append(TARGETS["first_boot_ratio"].row(walls["first"] / walls["warm"]))
    pieces = r.get("warm_boot_pieces")
    if pieces:
        rows.append(TARGETS["boot_to_first_result"].row(pieces["to first result"]))
        rows.append(TARGETS["collection_share"].row(pieces["collection"]
                                                    / pieces["to first result"]))
    bench_pieces = r.get("bench_boot_pieces")
    if bench_pieces:
        rows.append(TARGETS["bench_first_result"].row(bench_pieces["to first result"]))
    loop = r.get("edit_loop")
    if loop:
        rows.append(TARGETS["edit_loop"].row(loop["affected_seconds"]))
        rows.append(TARGETS["edit_loop_share"].row(loop["affected_seconds"]
                                                   / loop["whole_seconds"]))
    if "warm_rebuild_seconds" in r:
        rows.append(TARGETS["warm_rebuild"].row(r["warm_rebuild_seconds"]))
    return rows


def text(r: dict[str, Any]) -> str:
    parts = []
    for title, header, rows in tables(r):
        grid = [header, *rows]
        widths = [max(len(row[i]) for row in grid) for i in range(len(header))]
        parts.append(title)
        parts += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                  for row in grid]
        parts.append("")
    return "\n".join(parts)


def markdown(r: dict[str, Any]) -> str:
    parts = ["# gmemtest bench", ""]
    for title, header, rows in tables(r):
        parts += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        parts += ["| " + " | ".join(row) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def main(spec: KernelSpec, *, cmdline: list[str], seconds: float, cold: bool,
         out: Path | None, limits: qemu.Limits, edit_loop_only: bool = False) -> int:
    out = out or vmtest.results_root() / time.strftime("bench-%Y%m%d-%H%M%S")
    r = run(spec, cmdline=cmdline, seconds=seconds, cold=cold, out=out, limits=limits,
            edit_loop_only=edit_loop_only)
    print(text(r))
    print(f"report: {out}/bench.md, {out}/bench.json")
    return 0
