"""What a boot's tests did as they ran (``progress.jsonl``, appended by the guest at each test's
start and end): read when the guest died before pytest could write its JUnit file, to tell the
tests that ran from the one the kernel crashed under.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import health
from .outcome import Outcome, TestResult
from .run import Crash, Run

FILE = "progress.jsonl"
# -<worker>.txt: a line per test collected, "K <node id>" for a test of the kernel (it opens
# /dev/kvm), "H <node id>" for one of the harness
COLLECTED = "collected"
KERNEL, HARNESS = "K", "H"
DONE = "done.txt"  # node ids a fresh boot after a crash leaves out: they ran already
# Reports that end a guest; the first of them is what killed it (an earlier WARN is not).
FATAL = ("Oops", "BUG", "panic", "KASAN", "hard lockup")


@dataclass
class Progress:
    done: list[TestResult]  # by pytest node id
    running: list[str]  # started and never finished
    collected: dict[str, bool]  # node id -> whether it is a test of the kernel

    @property
    def left(self) -> list[str]:
        """The tests collected that neither finished nor were running."""
        gone = {r.name for r in self.done} | set(self.running)
        return [t for t in self.collected if t not in gone]


def read(results: Path) -> Progress:
    """The tests of a boot that finished (with their outcomes) and those still running."""
    done: dict[str, TestResult] = {}
    started: list[str] = []
    path = results / FILE
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line, cut off by the crash
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("start"), str):
            started.append(rec["start"])
        elif isinstance(rec.get("done"), str) and rec.get("outcome") in set(Outcome):
            done[rec["done"]] = TestResult(rec["done"], Outcome(rec["outcome"]),
                                           str(rec.get("message", "")))
    return Progress(list(done.values()), [t for t in dict.fromkeys(started) if t not in done],
                    collected(results))


def collected(results: Path) -> dict[str, bool]:
    """Every test a boot collected (node id -> whether it is a test of the kernel)."""
    out = {}
    for f in sorted(results.glob(f"{COLLECTED}-*.txt")):
        for line in f.read_text(errors="replace").splitlines():
            flag, _, nodeid = line.partition(" ")
            if nodeid:
                out[nodeid] = flag == KERNEL
    return out


def fatal_report(console: Path) -> str | None:
    """The first line of the kernel report that ended the guest (its first oops, BUG or panic;
    else its first report of any kind), from the console log."""
    text = console.read_text(errors="replace") if console.exists() else ""
    findings = health.scan(text, console=True)
    fatal = [f for f in findings if f.kind in FATAL] or findings
    return fatal[0].line if fatal else None


def crash_of(run: Run) -> Crash | None:
    """The kernel crash that ended ``run`` under a test: the guest died by itself (no status,
    and no limit of the runner ended it: a hung guest's dump is the runner's panic), a test
    was running, and the console holds the kernel's report."""
    if run.status is not None or run.limit is not None:
        return None
    running = read(run.results).running
    line = fatal_report(run.console)
    if not running or line is None:
        return None
    return Crash(line, tuple(running))


def junit_name(nodeid: str) -> str:
    """A pytest node id as the JUnit file names the test (classname::name)."""
    path, *rest = nodeid.split("::")
    parts = [*path.removesuffix(".py").split("/"), *rest]
    return ".".join(parts[:-1]) + "::" + parts[-1]


def kernel_tests(results: Path) -> set[str]:
    """The JUnit names of the tests of the kernel a boot collected (those opening /dev/kvm)."""
    return {junit_name(t) for t, kernel in collected(results).items() if kernel}
