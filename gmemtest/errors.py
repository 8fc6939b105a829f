"""The error family every failed KVM call raises.

The raw layer forwards whatever it is given; when the kernel refuses, the error says which call,
which errno and with what arguments, so a failing test reads like the kernel's answer.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class GmemtestError(Exception):
    """A problem the tool reports in one line (bad input, missing tool, failed step)."""


class BuildStage(StrEnum):
    """Where a kernel build stopped. The first three are the host's or the harness's fault, the
    rest the tree's own (what `git bisect run` may skip)."""

    HOST = "host"  # a tool is missing, the cache cannot be written
    FETCH = "fetch"  # Debian's source could not be fetched
    INPUT = "input"  # what the user named cannot be built (not a tree, a bad patch set)
    APPLY = "apply"  # a patch or a posted series does not apply
    CONFIG = "config"  # the kconfig fragments do not fit the tree
    COMPILE = "compile"  # the compiler or linker failed

    @property
    def tree_fault(self) -> bool:
        return self in (BuildStage.APPLY, BuildStage.CONFIG, BuildStage.COMPILE)


class BuildFailed(GmemtestError):
    """A kernel build that produced no kernel, the stage where it stopped, and ``detail``:
    what stopped it, without the framing of the one-line message (a table's cell)."""

    def __init__(self, stage: BuildStage, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.detail = detail or message


class KvmError(OSError):
    """A KVM or guest_memfd call failed: ``call`` returned ``errno`` for ``arguments``."""

    def __init__(self, call: str, err: int, arguments: Mapping[str, Any] | None = None,
                 target: str = "", error_offset: int | None = None) -> None:
        self.call = call
        self.errno_name = _errno.errorcode.get(err, str(err))
        self.arguments = dict(arguments or {})
        self.target = target
        self.error_offset = error_offset
        super().__init__(err, self._describe(err))

    def _describe(self, err: int) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.arguments.items())
        where = f" on {self.target}" if self.target else ""
        text = f"{self.call}({args}){where}: {self.errno_name} ({os.strerror(err)})"
        if self.error_offset is not None:
            text += f", error_offset={self.error_offset:#x}"
        return text

    def __str__(self) -> str:
        return self.strerror or ""


class ConversionError(KvmError):
    """A memory-attribute conversion failed; ``error_offset`` is where the kernel stopped."""


class VmKilled(KvmError):
    """KVM answered EIO: it marked the VM dead (``kvm_vm_dead()``, ``KVM_BUG_ON()``) after a
    failure inside the kernel, and every later ioctl on the VM fails the same way. The kernel
    log says why; the run's kernel health findings show it."""

    def _describe(self, err: int) -> str:
        return (super()._describe(err) + "; the kernel killed the VM: see the kernel health "
                "findings (the WARN or BUG in the kernel log)")


def one_line(e: BaseException) -> str:
    """How the tool reports a failure: one line, whatever the exception carries (an OSError
    may have only a message, or only an errno)."""
    if isinstance(e, KvmError):
        return str(e)
    if isinstance(e, OSError):
        parts = [p for p in (e.strerror or (e.args[0] if e.args else None),
                             e.filename and f"{e.filename}") if p]
        return ": ".join(str(p) for p in parts) or type(e).__name__
    return str(e) or type(e).__name__


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return hex(value) if value > 9 or value < 0 else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)
