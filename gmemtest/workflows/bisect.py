"""`gmemtest bisect-step`: one step of `git bisect run` over a kernel tree.

Build the current checkout incrementally (the build directory and ccache persist across steps),
boot it, run the selected tests, and answer in git bisect's terms: 0 good, 1 bad, 125 skip this
commit (through its own fault it does not build or boot, or the selected tests all skip on it),
128 abort (the host or the harness failed: a tool missing, a tree that is not one, QEMU absent,
pytest refusing its arguments, a kernel that is not what the boot asked for), so that `git bisect
run` stops instead of skipping every commit. A kernel that crashes the guest is bad.
"""

from __future__ import annotations

import sys
import time

from gmemtest.errors import BuildFailed, GmemtestError
from gmemtest.results import report
from gmemtest.results.run import Ended
from gmemtest.vmtier import kernel, qemu
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.progress import Progress

from . import vmtest

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
ANSWERS = {"skip": SKIP, "bad": BAD, "abort": ABORT}


def step(spec: KernelSpec, pytest_args: list[str], *, cmdline: list[str], limits: qemu.Limits,
         on_build_failure: str = "skip", on_boot_failure: str = "skip",
         switch: str | None = None) -> int:
    """Run one bisect step on the tree ``spec`` names; returns the exit status for git bisect
    run, after one line on stderr saying why when it is not good or bad. ``switch`` ("on",
    "off"): in-place conversion so where the commit's kernel has the switch ("default" or
    None: the command line leaves it alone)."""
    progress = Progress()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        build = kernel.resolve(spec, progress)
    except BuildFailed as e:
        if not e.stage.tree_fault:
            print(f"bisect-step: abort: {e}", file=sys.stderr)
            return ABORT
        print(f"bisect-step: this commit does not build ({e.stage}): {e}", file=sys.stderr)
        return ANSWERS[on_build_failure]
    timings["build"] = time.monotonic() - t0
    if switch in ("on", "off") and build.manifest is not None and build.manifest.switch:
        cmdline = [*cmdline, f"{vmtest.PARAM}={int(switch == 'on')}"]
    results = vmtest.results_root() / time.strftime("bisect-%Y%m%d-%H%M%S")
    try:
        run = qemu.boot(build, pytest_args, results=results, cmdline=cmdline, limits=limits)
    except GmemtestError as e:
        print(f"bisect-step: abort: {e}", file=sys.stderr)
        return ABORT
    outcome = report.evaluate(build.label, run)
    timings["boot"] = run.boot_seconds or 0.0
    timings["suite"] = run.total_seconds - timings["boot"]
    print(report.summary([outcome], timings))
    if outcome.crashes or outcome.ended is Ended.KERNEL_CRASH:
        print(f"bisect-step: bad: {outcome.verdict()}", file=sys.stderr)
        return BAD  # the kernel crashed: its own failure, whatever ran after
    if not outcome.ran:
        if outcome.ended.harness_fault:
            print(f"bisect-step: abort: {outcome.problem}", file=sys.stderr)
            return ABORT
        print(f"bisect-step: this commit's kernel did not run the tests: {outcome.problem}",
              file=sys.stderr)
        return ANSWERS[on_boot_failure]
    if outcome.failed == 0 and not outcome.findings and outcome.unexpected_skips:
        first = outcome.unexpected_skips[0]
        print(f"bisect-step: {len(outcome.unexpected_skips)} selected test(s) skipped for what "
              f"this commit's kernel lacks, first {first.name}: {first.message}: it cannot be "
              "judged", file=sys.stderr)
        return SKIP
    if not outcome.ok:
        return BAD
    if outcome.passed == 0:
        print("bisect-step: every selected test skipped on this commit: it cannot be judged",
              file=sys.stderr)
        return SKIP
    return GOOD
