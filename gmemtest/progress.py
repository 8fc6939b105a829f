"""Progress of long work (kernel builds, boots, suites) on stderr: a live status line on a
terminal, a line every ``interval`` seconds otherwise (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, interval: float = 20.0,
                 quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.quiet = quiet
        self.name = ""
        self.start = self.last = time.monotonic()
        self.timings: dict[str, float] = {}

    def _emit(self, text: str, *, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            cols = 120
            self.stream.write("\r\033[K" + text[:cols] + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def phase(self, name: str, detail: str = "") -> None:
        """Start (or continue) phase ``name``; the time since its first start is recorded."""
        now = time.monotonic()
        if name != self.name:
            if self.name:
                self.timings[self.name] = self.timings.get(self.name, 0) + now - self.start
            self.name, self.start = name, now
        self.last = now
        self._emit(f"[{name}] {detail}", final=not self.tty)

    def tick(self, count: str, detail: str = "") -> None:
        """A step inside the current phase: shown live on a terminal, every interval in logs."""
        now = time.monotonic()
        if self.tty or now - self.last >= self.interval:
            self.last = now
            self._emit(f"[{self.name}] {now - self.start:5.0f} s  {count}  {detail}")

    def done(self, name: str, detail: str) -> None:
        now = time.monotonic()
        if self.name:
            self.timings[self.name] = self.timings.get(self.name, 0) + now - self.start
        self.name = ""
        self._emit(f"[{name}] done: {detail}", final=True)
