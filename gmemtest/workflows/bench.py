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
import sys
import time
from pathlib import Path
from typing import Any

from gmemtest import tool
from gmemtest.errors import GmemtestError
from gmemtest.results import bench as bench_report
from gmemtest.results import phases, report
from gmemtest.results.answer import Answer
from gmemtest.vmtier import kernel, pycache, qemu
from gmemtest.vmtier.checkout import CHECKOUT
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.progress import Progress

from . import affected, vmtest
from . import coverage as cov


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
    if b.headers is None:
        raise GmemtestError(f"{b.label}: its build has no uapi headers")
    binary = out / "convert_loop"
    tool.run([gcc, "-O2", "-Wall", "-isystem", b.headers, "-o", binary,
              CHECKOUT / "vmimages/bench/convert_loop.c"],
             f"convert_loop.c against {b.headers}")
    return binary


def cold_build(spec: KernelSpec, progress: Progress) -> float:
    """A build in a fresh directory with ccache off; the directory is removed after."""
    b = kernel.resolve(spec, progress, fresh=True)
    if b.dir is not None:
        shutil.rmtree(b.dir, ignore_errors=True)
    return b.seconds


def run(spec: KernelSpec, *, cmdline: list[str], seconds: float, cold: bool, out: Path,
        limits: qemu.Limits, edit_loop_only: bool = False) -> bench_report.Document:
    progress = Progress()
    out.mkdir(parents=True, exist_ok=True)
    # An edit loop boots both modes, each with its own command line: no one to record.
    result = bench_report.Document(machine=machine())
    if not edit_loop_only:
        result["cmdline"] = cmdline
    b = kernel.resolve(spec, progress)
    if b.source_path is None or b.manifest is None:
        raise GmemtestError(f"{b.label}: bench builds its kernel (name a source, not a "
                            "built kernel)")
    if edit_loop_only:
        result["kernel"], result["patches"] = b.label, list(b.manifest.patches)
        result["edit_loop"] = edit_loop(spec, out / "edit-loop", limits, progress)
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
    for key in ("comparison", "conversion", "agent", "fixed_costs"):  # the guest's part
        if key in guest:
            result[key] = guest[key]
    return _written(result, out, progress)


def _written(result: bench_report.Document, out: Path,
             progress: Progress) -> bench_report.Document:
    progress.done("bench", str(out))
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bench.md").write_text(bench_report.markdown(result))
    return result


def main_job_suites(b: kernel.Build, out: Path, limits: qemu.Limits,
                    progress: Progress) -> bench_report.Document:
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
    return bench_report.Document(
        pycache_fill_seconds=round(fill, 1),
        suites_wall_seconds=bench_report.Walls(first=walls["first"], warm=walls["warm"],
                                               serial=walls["serial"]),
        suite_boots_side_by_side=qemu.boots_at_once(len(boots)),
        warm_boot_pieces=phases.pieces(warm_on.run.results, warm_on.run.boot_seconds or 0.0))


# The function the edit loop edits: which of KVM's mappings a hole punch or a memory failure
# zaps (kpatches/' "Take the invalidation filter from the stored shareability" and "Zap both
# states on hole punch and memory failure"), run by the tests that punch holes.
EDITED = ("virt/kvm/guest_memfd.c", "kvm_gmem_get_invalidate_filter")


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
              progress: Progress) -> bench_report.EditLoop:
    """Edit one function of guest_memfd.c in a developer's tree of the series, then the
    verdict of the tests covering it in both modes (`vm-test --affected HEAD`: selection,
    rebuild, boots), next to the same edit with the whole suite. The tree's coverage map is
    made first if it has none (`gmemtest coverage`), and the tree built and booted once, so
    that both loops start warm."""
    tree = kernel.series_tree(spec, progress).path
    at = spec.on_tree(tree)
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
    result = bench_report.EditLoop(edited=f"{file}: {function}()")
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
            took = round(time.monotonic() - t0, 1)
            tests = sum(len(o.results) for o in outcomes)
            if tag == "affected":
                result["affected_seconds"], result["affected_tests"] = took, tests
                result["affected_rebuild_seconds"] = round(b.seconds, 1)
            else:
                result["whole_seconds"], result["whole_tests"] = took, tests
                result["whole_rebuild_seconds"] = round(b.seconds, 1)
            bad = [o for o in outcomes if not o.ok]
            if bad:
                raise GmemtestError(f"the edit loop's {tag} run failed: {bad[0].verdict()}")
        finally:
            _restore(path, original)
    kernel.resolve(at, progress)  # the tree as it was, built
    return result


def main(spec: KernelSpec, *, cmdline: list[str], seconds: float, cold: bool,
         out: Path | None, limits: qemu.Limits, edit_loop_only: bool = False) -> Answer:
    out = out or vmtest.results_root() / time.strftime("bench-%Y%m%d-%H%M%S")
    r = run(spec, cmdline=cmdline, seconds=seconds, cold=cold, out=out, limits=limits,
            edit_loop_only=edit_loop_only)
    return Answer(0, f"{bench_report.text(r)}\nreport: {out}/bench.md, {out}/bench.json")
