"""Kernel health: the reports in a kernel log that fail a run.

A WARN, BUG, Oops, KASAN or lockdep report, an RCU stall or a soft/hard lockup, or a
command-line parameter the kernel refused, anywhere in the guest's log fails the run, whatever
the tests said.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
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
    ("OOM", re.compile(r"Out of memory: Killed process|invoked oom-killer")),
    # A command-line parameter the kernel did not take: the boot did not test what it was
    # asked to (gmemtest.testing.preflight names the parameter and what the kernel offers).
    ("parameter", re.compile(r"Unknown kernel command line parameters|[Uu]nknown parameter "
                             r"[`']|(invalid|too large) for parameter `")),
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


# The kernel's timestamp on the console: at a line's start, or after test output the line
# began with (pytest prints a test's name and no newline before the test runs).
KERNEL_STAMP = re.compile(r"\[\s*\d+\.\d{6}\]")


def scan(text: str, tests: tuple[str, ...] = (), *, console: bool = False) -> list[Finding]:
    """Every report start in ``text`` (dmesg), in order. With ``console``, only the kernel's
    own (timestamped) lines count: the test output between them is not the kernel's."""
    out = []
    for line in text.splitlines():
        if console:
            stamp = KERNEL_STAMP.search(line)
            if stamp is None:
                continue
            line = line[stamp.start():]
        kind = classify(line)
        if kind:
            out.append(Finding(kind, _strip_prefix(line), tests))
    return out


def _strip_prefix(line: str) -> str:
    """Drop the '[   12.345678] ' timestamp (and kmsg's 'level,seq,usec,flags;')."""
    line = re.sub(r"^\d+,\d+,\d+,[^;]*;", "", line)
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line).strip()


@dataclass(frozen=True)
class KmsgRecord:
    seq: int  # -1: records were overwritten before they were read
    level: int
    usec: int
    msg: str


def read_kmsg(fd: int) -> Iterator[KmsgRecord]:
    """The records /dev/kmsg has for ``fd`` (opened O_NONBLOCK) until none is left."""
    while True:
        try:
            raw = os.read(fd, 8192)
        except BlockingIOError:
            return
        except BrokenPipeError:
            yield KmsgRecord(-1, 0, 0, "(kmsg overrun)")
            continue
        if not raw:
            return
        head, _, rest = raw.decode(errors="replace").partition(";")
        fields = head.split(",")
        yield KmsgRecord(int(fields[1]), int(fields[0]) & 7, int(fields[2]),
                         rest.split("\n")[0])


class KmsgTail:
    """The kernel log from now on: :meth:`findings` returns the reports logged since the last
    call."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def findings(self) -> list[Finding]:
        return [Finding(kind, r.msg) for r in read_kmsg(self.fd) if (kind := classify(r.msg))]

    def close(self) -> None:
        os.close(self.fd)
