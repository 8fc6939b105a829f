"""`gmemtest bisect-step`: one step of `git bisect run` over a kernel tree.

Build the current checkout incrementally (the build directory and ccache persist across steps),
boot it, run the selected tests, and answer in git bisect's terms: 0 good, 1 bad, 125 skip this
commit (it does not build, or does not boot, for a reason unrelated to the tests), 128 abort (the
harness itself failed: QEMU missing, bad arguments).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results import report
from gmemtest.vmtier import kernel, qemu
from gmemtest.vmtier.progress import Progress

from . import vmtest

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
ANSWERS = {"skip": SKIP, "bad": BAD, "abort": ABORT}


def step(src: Path, pytest_args: list[str], *, cmdline: list[str], limits: qemu.Limits,
         on_build_failure: str = "skip", on_boot_failure: str = "skip",
         build_dir: Path | None = None) -> int:
    """Run one bisect step on ``src``; returns the exit status for git bisect run."""
    progress = Progress()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        build = kernel.build(src, patches=False, progress=progress, build_dir=build_dir)
    except GmemtestError as e:
        print(f"bisect-step: build failed: {e}", file=sys.stderr)
        return ANSWERS[on_build_failure]
    timings["build"] = time.monotonic() - t0
    results = vmtest.results_root() / time.strftime("bisect-%Y%m%d-%H%M%S")
    run = qemu.boot(build.bzimage, pytest_args, results=results, cmdline=cmdline, limits=limits,
                    env=vmtest.guest_env(build))
    outcome = report.evaluate(build.source.commit or build.source.version, run)
    timings["boot"] = run.boot_seconds or 0.0
    timings["suite"] = run.seconds - timings["boot"]
    print(report.summary([outcome], timings))
    if outcome.problem:
        # No test verdict: the kernel did not boot or the guest died before pytest finished.
        return ANSWERS[on_boot_failure]
    return GOOD if outcome.ok else BAD
