"""The running kernel's symbol table (/proc/kallsyms): where a kernel function's text lies."""

from __future__ import annotations

from pathlib import Path

from gmemtest.errors import GmemtestError

KALLSYMS = Path("/proc/kallsyms")
TEXT_TYPES = frozenset("tTwW")


def text_span(function: str) -> tuple[int, int]:
    """[start, end) of ``function``'s code: its address up to the next text symbol's. A
    return address inside it means the function is on the stack (its callees' frames
    return there). A function the kernel does not have, or addresses hidden by
    kptr_restrict, raise."""
    start = None
    starts = []
    for line in KALLSYMS.read_text().splitlines():
        addr, kind, name = line.split()[:3]
        if kind not in TEXT_TYPES:
            continue
        value = int(addr, 16)
        starts.append(value)
        if name == function:
            start = value
    if start is None:
        raise GmemtestError(f"{function} is not in {KALLSYMS} (CONFIG_KALLSYMS, or the kernel "
                            "has no such function)")
    if start == 0:
        raise GmemtestError(f"{KALLSYMS} shows zero addresses: run as root with "
                            "kernel.kptr_restrict below 2")
    end = min((a for a in starts if a > start), default=None)
    if end is None:
        raise GmemtestError(f"{function} is the last text symbol in {KALLSYMS}: its end is unknown")
    return start, end
