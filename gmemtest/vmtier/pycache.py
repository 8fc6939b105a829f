"""The guest's bytecode cache, filled on the host before a boot.

The guest runs the host's Python on the host's files (its root is the host's, read-only) with
PYTHONPYCACHEPREFIX on a share of ``cache_dir("guest-pycache")``. Bytecode and pytest's
rewritten test modules are keyed by the source's path, size and mtime, which the guest sees as
the host does, so the host can write them there with the same interpreter and prefix: compiling
under TCG is what made a first boot's suite run 3 to 5 times slower than the next one's.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from gmemtest.cache import cache_dir
from gmemtest.testing import GUEST_PYTEST_PLUGINS

from .checkout import CHECKOUT

log = logging.getLogger(__name__)
_lock = threading.Lock()
_filled: set[Path] = set()


def prefix() -> Path:
    """The host directory the guest mounts as its PYTHONPYCACHEPREFIX."""
    return cache_dir("guest-pycache")


# The standard library is compiled too: a module first imported while tests run (not while
# collecting) would otherwise be compiled in the guest on its first boot. Left out: what no test
# imports, the stdlib's own tests and GUI, and the other site directories.
STDLIB_UNUSED = (r"/(test|tests|idlelib|tkinter|turtledemo|lib2to3|ensurepip|site-packages"
                 r"|dist-packages)/")


def _stdlib_unused(stdlib: str) -> str:
    """compileall's -x for the directories of ``stdlib`` left out, anchored there: the venv's
    own site-packages is compiled."""
    return "^" + re.escape(stdlib.rstrip("/")) + STDLIB_UNUSED


def fill(checkout: Path = CHECKOUT, python: str = sys.executable) -> float:
    """Compile the standard library, the venv's packages and this checkout, and collect the
    suite (pytest rewrites and caches each test module it imports, and Python each module
    collection imports) into the guest's cache; returns the seconds it took. What is already
    current is skipped, so a second fill costs a directory walk and a collection."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix()), "GMEMTEST_IN_GUEST": "1",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    paths = sysconfig.get_paths()
    for cmd in ([python, "-m", "compileall", "-q", "-j0", "-x", _stdlib_unused(paths["stdlib"]),
                 paths["stdlib"], paths["purelib"],
                 *(str(checkout / d) for d in ("gmemtest", "tests", "vmimages"))],
                [python, "-m", "pytest", "-q", "--collect-only", *GUEST_PYTEST_PLUGINS,
                 str(checkout / "tests"), str(checkout / "vmimages/bench")]):
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        if proc.returncode not in (0, 5):  # 5: nothing collected (a tree without tests)
            log.warning("pycache fill: %s exited %d: %s", cmd[2:4], proc.returncode,
                        (proc.stdout + proc.stderr).strip().splitlines()[-1:])
    seconds = time.monotonic() - start
    log.info("guest bytecode cache %s filled in %.1f s", prefix(), seconds)
    return seconds


def fill_once(checkout: Path = CHECKOUT) -> None:
    """:func:`fill`, once per process and checkout (boots side by side share it)."""
    with _lock:
        if checkout not in _filled:
            fill(checkout)
            _filled.add(checkout)
