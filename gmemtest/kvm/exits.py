"""Typed vCPU exits: what KVM_RUN stopped for, decoded from struct kvm_run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import uapi


@dataclass(frozen=True)
class Exit:
    """Base of every exit; ``reason`` is run->exit_reason."""

    reason: int


@dataclass(frozen=True)
class Io(Exit):
    port: int
    direction: int
    size: int
    count: int
    data: bytes


@dataclass(frozen=True)
class Mmio(Exit):
    gpa: int
    data: bytes
    length: int
    is_write: bool


@dataclass(frozen=True)
class Hypercall(Exit):
    nr: int
    args: tuple[int, ...]
    longmode: bool


@dataclass(frozen=True)
class MemoryFault(Exit):
    """KVM_EXIT_MEMORY_FAULT: the guest's access and the gfn's private/shared state disagree
    (or KVM cannot serve the gfn); KVM_RUN returned -1/EFAULT with this exit."""

    gpa: int
    size: int
    private: bool
    flags: int


@dataclass(frozen=True)
class Hlt(Exit):
    pass


@dataclass(frozen=True)
class Shutdown(Exit):
    """The guest triple-faulted."""


@dataclass(frozen=True)
class FailEntry(Exit):
    hardware_reason: int
    cpu: int


@dataclass(frozen=True)
class InternalError(Exit):
    suberror: int
    data: tuple[int, ...]


@dataclass(frozen=True)
class Unknown(Exit):
    hardware_reason: int


def decode(run: Any) -> Exit:
    """Decode ``run`` (a ``struct kvm_run *``) into the typed exit for its exit_reason."""
    reason = run.exit_reason
    if reason == uapi.KVM_EXIT_IO:
        io = run.io
        raw = uapi.ffi.buffer(uapi.ffi.cast("char *", run) + io.data_offset, io.size * io.count)
        return Io(reason, io.port, io.direction, io.size, io.count, bytes(raw))
    if reason == uapi.KVM_EXIT_MMIO:
        m = run.mmio
        return Mmio(reason, m.phys_addr, bytes(m.data)[:m.len], m.len, bool(m.is_write))
    if reason == uapi.KVM_EXIT_HYPERCALL:
        h = run.hypercall
        return Hypercall(reason, h.nr, tuple(h.args), bool(h.longmode))
    if reason == uapi.KVM_EXIT_MEMORY_FAULT:
        f = run.memory_fault
        return MemoryFault(reason, f.gpa, f.size,
                           bool(f.flags & uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE), f.flags)
    if reason == uapi.KVM_EXIT_HLT:
        return Hlt(reason)
    if reason == uapi.KVM_EXIT_SHUTDOWN:
        return Shutdown(reason)
    if reason == uapi.KVM_EXIT_FAIL_ENTRY:
        return FailEntry(reason, run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu)
    if reason == uapi.KVM_EXIT_INTERNAL_ERROR:
        i = run.internal
        return InternalError(reason, i.suberror, tuple(i.data)[:i.ndata])
    return Unknown(reason, run.hw.hardware_exit_reason)
