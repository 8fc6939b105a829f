"""Per-test coverage in the guest of a coverage build ($GMEMTEST_GCOV set by the runner).

The kernel's gcov counters (CONFIG_GCOV_KERNEL, /sys/kernel/debug/gcov) are global: before
each test they are reset, after it every .gcda file whose counters moved is kept, as
``$GMEMTEST_RESULTS/gcov/<n>/<path>.gcda``, and ``gcov/index.jsonl`` says which test <n> was.
The tests of a coverage boot run one at a time (no xdist), so the counters are one test's.
The host reads them with gcov against the build's .gcno files (gmemtest.results.coverage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gmemtest.errors import GmemtestError

from .debugfs import DEBUGFS

ROOT = DEBUGFS / "gcov"
ENV = "GMEMTEST_GCOV"


def counters() -> dict[str, bytes]:
    """Every .gcda file the kernel offers, by its path under the gcov directory."""
    return {str(p.relative_to(ROOT)): p.read_bytes() for p in ROOT.rglob("*.gcda")}


def reset() -> None:
    (ROOT / "reset").write_text("1\n")


class Collector:
    """The plugin that records each test's counters."""

    def __init__(self, out: Path) -> None:
        if not ROOT.is_dir():
            raise GmemtestError(f"{ENV} is set but the kernel has no {ROOT} (CONFIG_GCOV_KERNEL, "
                                "debugfs mounted): boot a coverage build")
        self.out = out
        self.n = 0
        reset()
        self.zero = counters()  # what a file holds when no instrumented line ran
        if not self.zero:
            raise GmemtestError(f"{ENV} is set but no object of this kernel is instrumented "
                                f"(no .gcda under {ROOT}): boot a coverage build")
        out.mkdir(parents=True, exist_ok=True)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: object) -> Iterator[None]:
        reset()
        yield
        self.n += 1
        for name, data in counters().items():
            if data != self.zero.get(name):
                dest = self.out / str(self.n) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
        with open(self.out / "index.jsonl", "a") as f:
            f.write(json.dumps({"n": self.n, "test": item.nodeid}) + "\n")
