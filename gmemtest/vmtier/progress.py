"""Progress of long work (kernel builds, boots, suites) on stderr: a live tqdm bar on a terminal,
a plain line every ``interval`` seconds otherwise (CI logs)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Display only: what the run does is logged (gmemtest.results.runlog) by the code doing
    it, and phases are logged here as they start and end."""

    def __init__(self, stream: TextIO | None = None, interval: float = 20.0,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.quiet = quiet
        self.name = ""
        self.start = self.last = time.monotonic()
        self.timings: dict[str, float] = {}
        self._bar: tqdm | None = None

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _end_phase(self, now: float) -> None:
        self._close_bar()
        if self.name:
            self.timings[self.name] = self.timings.get(self.name, 0) + now - self.start

    def phase(self, name: str, detail: str = "") -> None:
        """Start (or continue) phase ``name``; the time since its first start is recorded."""
        now = time.monotonic()
        if name != self.name:
            self._end_phase(now)
            self.name, self.start = name, now
            log.info("phase %s: %s", name, detail)
        self.last = now
        self._line(f"[{name}] {detail}")

    def tick(self, n: int, unit: str, detail: str = "", total: int | None = None) -> None:
        """``n`` units of the current phase done (of about ``total``): a bar on a terminal, a
        line every interval in logs."""
        now = time.monotonic()
        if self.quiet:
            return
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(desc=f"[{self.name}]", total=total, unit=f" {unit}",
                                 file=self.stream, leave=False, dynamic_ncols=True)
            if total is not None and n > total:
                self._bar.total = n
            self._bar.update(n - self._bar.n)
            self._bar.set_postfix_str(detail[-50:], refresh=False)
        elif now - self.last >= self.interval:
            self.last = now
            of = f"/~{total}" if total else ""
            self._line(f"[{self.name}] {now - self.start:5.0f} s  {n}{of} {unit}  {detail}")

    def done(self, name: str, detail: str) -> None:
        self._end_phase(time.monotonic())
        self.name = ""
        log.info("done %s: %s", name, detail)
        self._line(f"[{name}] done: {detail}")
