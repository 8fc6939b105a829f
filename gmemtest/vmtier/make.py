"""Running make on a kernel tree: the environment every build gets, and the line of a failed
build that says what went wrong."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from gmemtest.cache import cache_dir


def make_env(src: Path) -> dict[str, str]:
    """make's environment: ccache shares objects across trees (pristine, patched, bisect
    checkouts) because paths under the tree are hashed relative to it."""
    env = dict(os.environ)
    if shutil.which("ccache"):
        env.setdefault("CCACHE_DIR", str(cache_dir("ccache")))
        env.setdefault("CCACHE_BASEDIR", str(src))
        env.setdefault("CCACHE_NOHASHDIR", "1")
    return env


# What names a failed build, best first: a compiler or linker diagnostic, then make's own.
BUILD_ERRORS = (re.compile(r": (fatal )?error: "), re.compile(r"undefined reference to|"
                                                              r"ld: .*(error|No such file)"),
                re.compile(r"\*\*\* .*(Error \d+|[Nn]o rule|[Ss]top)"))


def first_error(output: str, rc: int) -> str:
    """The line of a failed make's output that says what went wrong."""
    lines = [ln.strip() for ln in output.splitlines()]
    for pattern in BUILD_ERRORS:
        for line in lines:
            if pattern.search(line):
                return line
    return f"make exited {rc}"
