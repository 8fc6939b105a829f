"""The record of one boot of the kernel under test: where its files are and what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Ended(StrEnum):
    """How a boot ended: with its tests run, or not, and whose fault that was."""

    TESTS_RAN = "tests ran"  # pytest ran the tests and exited 0 (passed) or 1 (failures)
    PYTEST = "pytest did not run the tests"  # a usage, collection or internal error: the harness
    CRASHED = "pytest was killed"  # by a signal: what a kernel bug does to a test process
    BOOT_TIMEOUT = "boot timeout"
    TIMEOUT = "overall timeout"
    HANG = "hang"
    NO_STATUS = "the guest ended without a test status"  # a panic, a crash of the init
    NOT_STARTED = "QEMU did not start"
    STOPPED = "stopped"  # by its caller: another boot had already decided (gmemtest mutate)
    KERNEL_REPORT = "stopped at a kernel report"  # its caller asked for no more (gmemtest mutate)
    KERNEL_CRASH = "the kernel crashed"  # an oops or a panic ended the guest outside any test
    CONTRACT = "not the kernel the boot asked for"  # a parameter or a promise did not hold
    NO_RESULTS = "unreadable test results"  # the guest's JUnit file cannot be read

    @property
    def harness_fault(self) -> bool:
        """Whether the harness (or what it was told), not the kernel under test, kept the
        tests from running."""
        return self in (Ended.PYTEST, Ended.NOT_STARTED, Ended.CONTRACT, Ended.NO_RESULTS)


@dataclass(frozen=True)
class Crash:
    """A kernel crash that ended a boot while tests ran: the report's first line and the
    tests running then (each the kernel's failure)."""

    line: str
    tests: tuple[str, ...]


@dataclass
class Run:
    """One boot: its results directory and console log, pytest's exit status in the guest
    (None when the guest never reported one), the accelerator, times, and the runner's limit
    that ended it, if any."""

    results: Path
    console: Path
    status: int | None = None
    accel: str = ""
    boot_seconds: float | None = None
    seconds: float = 0.0
    limit_hit: str | None = None  # what the runner's limit that ended the boot says
    limit: Ended | None = None  # which limit that was
    timings: dict[str, float] = field(default_factory=dict)
    crash: Crash | None = None  # the kernel crashed under a test: the boot ended there
    after: Run | None = None  # the fresh boot that ran the tests the crash left

    def segments(self) -> list[Run]:
        """This boot, then each fresh boot that ran the rest after a kernel crash."""
        out: list[Run] = []
        run: Run | None = self
        while run is not None:
            out.append(run)
            run = run.after
        return out

    @property
    def total_seconds(self) -> float:
        """The wall time of this boot and of the fresh boots after it."""
        return sum(r.seconds for r in self.segments())
