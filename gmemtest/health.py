"""Kernel health: the reports in a kernel log that fail a run.

A WARN, BUG, Oops, KASAN or lockdep report, an RCU stall or a soft/hard lockup anywhere in the
guest's log fails the run, whatever the tests said.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (kind, pattern) in the order they are tried on each line; the first match names the line.
PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("KASAN", re.compile(r"BUG: KASAN: |KASAN: ")),
    ("lockdep", re.compile(r"WARNING: (possible circular locking dependency|possible recursive "
                           r"locking|inconsistent lock state|suspicious RCU usage|lock held "
                           r"when returning|bad unlock balance|held lock freed)|"
                           r"INFO: possible (irq lock inversion|recursive locking)")),
    ("soft lockup", re.compile(r"watchdog: BUG: soft lockup")),
    ("hard lockup", re.compile(r"Watchdog detected hard LOCKUP|NMI watchdog: .*hard LOCKUP")),
    ("RCU stall", re.compile(r"rcu: INFO: \w+ (self-)?detected stalls?|"
                             r"INFO: rcu_\w+ (self-)?detected stall")),
    ("hung task", re.compile(r"INFO: task .* blocked for more than \d+ seconds")),
    ("Oops", re.compile(r"Oops: |Oops\[#\d+\]|general protection fault")),
    ("BUG", re.compile(r"(?<![\w:])BUG: ")),
    ("WARNING", re.compile(r"(?<![\w:])WARNING: ")),
    ("panic", re.compile(r"Kernel panic - not syncing")),
]


@dataclass(frozen=True)
class Finding:
    """The first line of one kernel report, and the test(s) running when it was logged."""

    kind: str
    line: str
    tests: tuple[str, ...] = ()

    def __str__(self) -> str:
        during = f" during {' or '.join(self.tests)}" if self.tests else ""
        return f"{self.kind}{during}: {self.line}"


def classify(line: str) -> str | None:
    """The kind of report ``line`` starts, or None for an ordinary line."""
    for kind, pattern in PATTERNS:
        if pattern.search(line):
            return kind
    return None


KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\]")


def scan(text: str, tests: tuple[str, ...] = (), *, console: bool = False) -> list[Finding]:
    """Every report start in ``text`` (dmesg), in order. With ``console``, only the kernel's
    own (timestamped) lines count: the test output between them is not the kernel's."""
    out = []
    for line in text.splitlines():
        if console and not KERNEL_LINE.match(line):
            continue
        kind = classify(line)
        if kind:
            out.append(Finding(kind, _strip_prefix(line), tests))
    return out


def _strip_prefix(line: str) -> str:
    """Drop the '[   12.345678] ' timestamp (and kmsg's 'level,seq,usec,flags;')."""
    line = re.sub(r"^\d+,\d+,\d+,[^;]*;", "", line)
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line).strip()
