"""debugfs, where fault injection and gup_test live: a kernel without it lacks a capability; a
kernel with it that nobody mounted is a broken test setup, said as an error."""

from __future__ import annotations

import os
from pathlib import Path

from gmemtest.errors import GmemtestError

DEBUGFS = Path("/sys/kernel/debug")


def entry(name: str, option: str) -> tuple[Path, str | None]:
    """``name`` under debugfs, and why it is missing: the kernel option that would create it
    (None when it is there). An unmounted debugfs raises, naming the mount command."""
    if "debugfs" not in Path("/proc/filesystems").read_text():
        return DEBUGFS / name, f"CONFIG_DEBUG_FS (for {option}): no debugfs in /proc/filesystems"
    if not os.path.ismount(DEBUGFS):
        raise GmemtestError(f"debugfs is not mounted at {DEBUGFS} (needed for {name}): "
                            f"mount -t debugfs none {DEBUGFS}")
    path = DEBUGFS / name
    return path, None if path.exists() else f"{option}: {path} absent"
