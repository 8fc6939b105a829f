"""The guest's check, before its first test, that the kernel is the one the boot asked for
(gmemtest.results.contract): every parameter gmemtest put on the command line took, and every
need the kernel's configuration promises is met.

The kernel ignores a ``kvm.`` parameter it does not know without a word (KVM is built in), and
keeps the default for a value it refuses: only reading the parameter back tells.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gmemtest.errors import GmemtestError, KvmError
from gmemtest.results import health
from gmemtest.results.contract import Contract, as_bool

SYS_MODULE = Path("/sys/module")
PROC_SYS = Path("/proc/sys")
# What the kernel prints of a parameter it did not take.
PARAM_MESSAGES = ("Unknown kernel command line parameters", "nknown parameter",
                  "for parameter")


def param_problem(name: str, value: str, sys_module: Path = SYS_MODULE,
                  proc_sys: Path = PROC_SYS) -> str | None:
    """What is wrong with ``name=value`` on the running kernel (None: it took)."""
    module, _, param = name.partition(".")
    if module == "sysctl":
        path = proc_sys / param.replace(".", "/")
        if not path.exists():
            return f"{name}={value}: no sysctl {param} in this kernel"
    else:
        path = sys_module / module / "parameters" / param.replace("-", "_")
        if not path.exists():
            if not (sys_module / module).is_dir():
                return f"{name}={value}: no module {module} in this kernel"
            offered = sorted(p.name for p in (sys_module / module / "parameters").glob("*"))
            return (f"{name}={value}: {module} has no parameter {param} (it has: "
                    f"{', '.join(offered) or 'none'})")
    try:
        actual = path.read_text().strip()
    except OSError as e:
        return f"{name}={value}: {path} cannot be read ({e.strerror})"
    if _same(actual, value):
        return None
    return f"{name}={value} did not take: {path} reads {actual!r}"


def _same(actual: str, value: str) -> bool:
    if actual in ("Y", "N"):
        return as_bool(value) == (actual == "Y")
    try:
        return int(actual, 0) == int(value, 0)
    except ValueError:
        return actual == value


def kernel_said(name: str) -> str | None:
    """The kernel's own message about parameter ``name``, if it logged one."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        for r in health.read_kmsg(fd):
            if any(m in r.msg for m in PARAM_MESSAGES) and (
                    name in r.msg or "Unknown kernel command line" in r.msg):
                return r.msg.strip()
    finally:
        os.close(fd)
    return None


def check(contract: Contract, missing: Callable[[str], str | None]) -> str | None:
    """The first broken promise of ``contract`` in one line (None: the kernel is the one asked
    for). ``missing`` answers why a need is unmet (the plugin's probe)."""
    for name, value in contract.params:
        problem = param_problem(name, value)
        if problem is not None:
            said = kernel_said(name)
            return problem + (f"; the kernel said: {said}" if said else "")
    for p in contract.promises:
        try:
            why = missing(p.need)
        except (GmemtestError, KvmError, OSError) as e:
            return f"{p.why} promises {p.need}, but the kernel answers: {e}"
        if why is not None:
            return f"{p.why} promises {p.need}, but the kernel answers: {why}"
    return None
