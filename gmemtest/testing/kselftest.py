"""The kernel tree's own KVM selftests, as a boot runs them beside the suite.

The host builds, with the kernel, the programs of the tree's tools/testing/selftests/kvm that
exercise guest_memfd (found in the tree: gmemtest.vmtier.selftests) and lists them in
``kselftests.json`` beside the binaries: each program's name, what it needs of the kernel (a
word of the plugin's vocabulary) and, for one that did not build, the build's first error. The
guest reads the listing once ($GMEMTEST_KSELFTESTS names its directory) and runs each program as
one test; its kselftest TAP output says which of its cases passed, failed or skipped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results.shape import ListOf, Maybe, check, read_json

ENV = "GMEMTEST_KSELFTESTS"
LISTING = "kselftests.json"
# kselftest's exit codes (tools/testing/selftests/kselftest.h)
KSFT_PASS, KSFT_FAIL, KSFT_XFAIL, KSFT_XPASS, KSFT_SKIP = 0, 1, 2, 3, 4
# A TAP result line: "ok 3 name", "not ok 4 name", "ok 5 name # SKIP reason"
RESULT_LINE = re.compile(r"^(?P<ok>not ok|ok) \d+ (?P<name>.*?)"
                         r"(?:\s+#\s*(?P<directive>SKIP|XFAIL|TODO)\b\s*(?P<reason>.*))?$",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Program:
    """One selftest program of the tree: its path under tools/testing/selftests/kvm without
    ``.c`` (``x86/private_mem_conversions_test``), what it needs of the kernel, and the first
    error of its build when it did not build."""

    name: str
    needs: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Listing:
    """The programs built for one kernel, in the directory that holds them."""

    root: Path
    programs: tuple[Program, ...]

    def binary(self, program: Program) -> Path:
        return self.root / program.name

    def write(self) -> None:
        doc = [{"name": p.name, "needs": list(p.needs), "error": p.error}
               for p in self.programs]
        (self.root / LISTING).write_text(json.dumps(doc, indent=1) + "\n")


SHAPE = ListOf({"name": str, "needs": ListOf(str), "error": Maybe(str)})


def read(root: Path) -> Listing:
    """The listing in ``root``; one line for a missing or damaged one."""
    path = root / LISTING
    doc = read_json(path, "a selftest listing", f"{path}: no selftest listing there (the "
                    "kernel's build lists its tree's selftests)")
    check(doc, SHAPE, str(path))
    return Listing(root, tuple(Program(d["name"], tuple(d["needs"]), d["error"]) for d in doc))


def from_env() -> Listing | None:
    """The listing $GMEMTEST_KSELFTESTS names, or None when it names none."""
    root = os.environ.get(ENV)
    return read(Path(root)) if root else None


@dataclass(frozen=True)
class Result:
    """What one run of a program showed: its exit status, its output, and its TAP lines that
    failed and that skipped (each with the reason the program gave)."""

    status: int
    output: str
    failed: tuple[str, ...]
    skipped: tuple[str, ...]

    @property
    def summary(self) -> str:
        """The program's last words: its skip reason or its last failing line."""
        lines = [ln.strip() for ln in self.output.splitlines() if ln.strip()]
        return (self.failed or self.skipped or tuple(lines[-1:]) or ("no output",))[-1]


def parse(status: int, output: str) -> Result:
    """A run's result from its exit status and its TAP output."""
    failed, skipped = [], []
    for line in output.splitlines():
        m = RESULT_LINE.match(line.strip())
        if m is None:
            continue
        directive = (m["directive"] or "").upper()
        if directive == "SKIP":
            skipped.append(f"{m['name']}: {m['reason'] or 'no reason given'}")
        elif m["ok"].lower() == "not ok" and directive not in ("XFAIL", "TODO"):
            failed.append(m["name"])
    return Result(status, output, tuple(failed), tuple(skipped))


def run(binary: Path, timeout: float | None = None) -> Result:
    """Run one program, as kselftest's runner would: no arguments, its output collected."""
    if not binary.is_file():
        raise GmemtestError(f"{binary}: not built")
    proc = subprocess.run([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=timeout)
    return parse(proc.returncode, proc.stdout)
