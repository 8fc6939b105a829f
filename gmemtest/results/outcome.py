"""One vocabulary for what happened to a test, shared by the guest's writer, the run report, the
matrix and its baseline."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """A test's outcome. The values are what JSON documents (matrix.json, baselines) hold."""

    PASSED = "passed"
    FAILED = "failed"  # an assertion or an unexpected exception in the test
    ERROR = "error"  # the test could not run: its setup or teardown failed
    TIMEOUT = "timeout"  # pytest-timeout stopped it
    SKIPPED = "skipped"  # the kernel lacks what it needs (the message names it)
    XFAILED = "xfailed"  # a known deviation of this kernel, failing as expected

    @property
    def ok(self) -> bool:
        """Whether the outcome leaves a run passing."""
        return self in (Outcome.PASSED, Outcome.SKIPPED, Outcome.XFAILED)


@dataclass(frozen=True)
class TestResult:
    """A test by its pytest node id, its outcome and the message behind it (the skip reason,
    or the first lines of the failure)."""

    __test__ = False  # not a pytest test class

    name: str
    outcome: Outcome
    message: str = ""


def short(message: str, width: int = 160) -> str:
    """A message's first lines (the exception, the assertion) on one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()][:2]
    text = " / ".join(lines)
    return text if len(text) <= width else text[:width - 3] + "..."
