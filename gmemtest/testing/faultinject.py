"""Kernel fault injection (Documentation/fault-injection/fault-injection.rst) aimed at one thread.

failslab fails slab allocations, fail_page_alloc page allocations. Both are configured through
debugfs with task-filter on, so only a thread whose /proc/thread-self/make-it-fail is 1 is hit;
an :class:`Injector` sets that flag for the duration of its ``with`` block only, so wrap exactly
the ioctl (or KVM_RUN) under test::

    with Injector("failslab") as inj:
        gmem.to_private(0, size)        # -> ConversionError ENOMEM
    assert inj.injected == 1

``space`` lets that many bytes of allocations through before failures start, so a sweep over it
reaches each allocation of a call in turn. ``within`` names a kernel function: only allocations
made while it is on the stack fail (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER), so that a
failure cannot land in an allocation the call makes on its way there, which may have a fallback
that absorbs it (a slab refilled at a lower order).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from . import debugfs, kallsyms

KINDS = {"failslab": "CONFIG_FAILSLAB", "fail_page_alloc": "CONFIG_FAIL_PAGE_ALLOC"}
FILTER_OPTION = "CONFIG_FAULT_INJECTION_STACKTRACE_FILTER"
ANYWHERE = (0, (1 << 64) - 1)  # require-start, require-end: every stack passes
STACK_DEPTH = 32  # the most return addresses the filter looks at (MAX_STACK_TRACE_DEPTH)
LOCK = Path("/tmp/gmemtest-faultinject.lock")  # the knobs are global: one injector at a time


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot be injected here (None when it can); an unmounted debugfs raises."""
    path, why = debugfs.entry(kind, f"{KINDS[kind]} and CONFIG_FAULT_INJECTION_DEBUG_FS")
    if why is None and not (path / "task-filter").exists():
        why = f"CONFIG_FAULT_INJECTION_DEBUG_FS: {path / 'task-filter'} absent"
    if why is None and not Path("/proc/thread-self/make-it-fail").exists():
        why = "CONFIG_FAULT_INJECTION: /proc/thread-self/make-it-fail absent"
    return why


def missing_filter(kind: str) -> str | None:
    """Why ``kind`` cannot be limited to one function's callees here (None when it can)."""
    why = missing(kind)
    if why is None and not (debugfs.DEBUGFS / kind / "require-start").exists():
        why = f"{FILTER_OPTION}: {debugfs.DEBUGFS / kind / 'require-start'} absent"
    return why


class Injector:
    """Fail up to ``times`` allocations of ``kind`` in this thread, after ``space`` bytes,
    made under the kernel function ``within`` if one is named."""

    def __init__(self, kind: str, *, times: int = 1, space: int = 0,
                 within: str | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fault injection {kind!r}; one of {', '.join(KINDS)}")
        self.dir = debugfs.DEBUGFS / kind
        self.times = times
        self.space = space
        self.within = within
        self.injected = 0
        self._flag = -1
        self._lock = -1

    def _set(self, knob: str, value: int | str) -> None:
        (self.dir / knob).write_text(f"{value}\n")

    def __enter__(self) -> Injector:
        # The debugfs knobs are global: one injector at a time system-wide (xdist workers
        # would switch each other's off, and count each other's failures).
        self._lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        # Sleeping allocations (GFP_KERNEL) are what conversions make: do not ignore them.
        self._set("ignore-gfp-wait", "N")
        if (self.dir / "ignore-gfp-highmem").exists():
            self._set("ignore-gfp-highmem", "N")
        if (self.dir / "min-order").exists():  # fail_page_alloc skips order 0 by default
            self._set("min-order", 0)
        self._set("task-filter", "Y")
        self._set("verbose", 0)
        self._set("interval", 1)
        self._set("probability", 100)
        self._set("space", self.space)
        self._set("times", self.times)
        self._limit(kallsyms.text_span(self.within) if self.within else ANYWHERE)
        self._flag = os.open("/proc/thread-self/make-it-fail", os.O_WRONLY)
        os.write(self._flag, b"1")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.write(self._flag, b"0")
            os.close(self._flag)
            left = int((self.dir / "times").read_text())
            self.injected = self.times - left
            self._set("probability", 0)
            self._set("times", 0)
            self._limit(ANYWHERE)
        finally:
            os.close(self._lock)  # releases the lock

    def _limit(self, span: tuple[int, int]) -> None:
        """Fail only allocations with a return address in [start, end) on their stack."""
        if self.within is None and not (self.dir / "require-start").exists():
            return
        self._set("stacktrace-depth", STACK_DEPTH)
        self._set("require-start", span[0])
        self._set("require-end", span[1])
