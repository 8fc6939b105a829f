"""Host mappings: anonymous memory for memslots and MAP_SHARED views of a guest_memfd.

A private guest_memfd page is not in any host page table: touching it kills the toucher with
SIGBUS. :meth:`Mapping.probe` therefore touches the page in a forked child and reports what the
kernel did to it, leaving the test process alive.
"""

from __future__ import annotations

import errno
import faulthandler
import os
import signal
from collections.abc import Callable
from typing import TypeVar

from gmemtest.errors import GmemtestError, KvmError

from . import libc

ffi = libc.ffi
PROBE_FAILED = 125  # a probe child's exit status when it could not touch the byte at all

def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0,
         addr: int = 0) -> int:
    """mmap(2) forwarding every argument; returns the address or raises KvmError("mmap")."""
    ptr = libc.lib.mmap(ffi.cast("void *", addr), length, prot, flags, fd, offset)
    address = int(ffi.cast("uintptr_t", ptr))
    if address == libc.MAP_FAILED:
        raise KvmError("mmap", ffi.errno, {"length": length, "prot": prot, "flags": flags,
                                           "fd": fd, "offset": offset})
    return address


_T = TypeVar("_T")
_R = TypeVar("_R")


def _proc_mem(op: Callable[[int, _T, int], _R], addr: int, arg: _T) -> _R | None:
    """``op`` (os.pread or os.pwrite) on /proc/self/mem at ``addr``; None where the kernel
    refuses the access (EIO or EFAULT: a page it cannot fault in)."""
    fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    try:
        return op(fd, arg, addr)
    except OSError as e:
        if e.errno in (errno.EIO, errno.EFAULT):
            return None
        raise
    finally:
        os.close(fd)


class Mapping:
    """A host virtual mapping [addr, addr + size) that is unmapped on close."""

    def __init__(self, addr: int, size: int, *, reserved: tuple[int, int] | None = None) -> None:
        self.addr = addr
        self.size = size
        self._reserved: tuple[int, int] | None = reserved or (addr, size)
        self._buf = ffi.buffer(ffi.cast("char *", addr), size)

    def read(self, offset: int, length: int = 1) -> bytes:
        """Read host-side; faults in the page (SIGBUS if the page is private)."""
        return bytes(self._buf[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        """Write host-side; faults in the page (SIGBUS if the page is private)."""
        self._buf[offset:offset + len(data)] = data

    def read_u64(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 8), "little")

    def peek(self, offset: int, length: int = 1) -> bytes | None:
        """Read through /proc/self/mem, the kernel's get_user_pages path (as a debugger
        would): the same fault handler runs, but where a touch would get SIGBUS the read fails
        instead (None). Cheap enough to check every page after every step."""
        return _proc_mem(os.pread, self.addr + offset, length)

    def poke(self, offset: int, data: bytes) -> bool:
        """Write through /proc/self/mem; False where a touch would get SIGBUS."""
        return _proc_mem(os.pwrite, self.addr + offset, data) is not None

    def write_u64(self, offset: int, value: int) -> None:
        self.write(offset, value.to_bytes(8, "little"))

    def splice_into(self, pipe: int, offset: int, length: int = 4096) -> int:
        """vmsplice(2) [offset, offset + length) into the pipe ``pipe``: the pipe holds a
        reference to each page until it is read or closed (an extra reference a conversion to
        private must refuse). Returns the bytes spliced."""
        iov = ffi.new("struct iovec *", {"iov_base": ffi.cast("void *", self.addr + offset),
                                         "iov_len": length})
        n = libc.lib.vmsplice(pipe, iov, 1, 0)
        if n < 0:
            raise KvmError("vmsplice", ffi.errno, {"offset": offset, "length": length})
        return int(n)

    def madvise(self, advice: int, offset: int = 0, length: int | None = None) -> None:
        length = self.size - offset if length is None else length
        if libc.lib.madvise(ffi.cast("void *", self.addr + offset), length, advice) != 0:
            raise KvmError("madvise", ffi.errno, {"offset": offset, "length": length,
                                                  "advice": advice})

    def probe(self, offset: int, *, write: bool = False, value: int = 0) -> str:
        """Touch one byte in a forked child: "ok", or the signal the kernel delivered. The
        child's own failure to touch it (an offset outside the mapping, a closed one) is an
        error, never "ok"."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            faulthandler.disable()  # the SIGBUS is the expected answer, not a crash to report
            status = PROBE_FAILED
            try:
                if write:
                    self._buf[offset] = bytes([value])
                else:
                    self._buf[offset]
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return signal.Signals(os.WTERMSIG(status)).name
        if os.WEXITSTATUS(status) != 0:
            raise GmemtestError(f"probe of offset {offset:#x} of a {self.size:#x}-byte mapping: "
                                "the child could not touch it (not a fault the kernel "
                                "delivered)")
        return "ok"

    def close(self) -> None:
        if self._reserved is not None:
            base, size = self._reserved
            self._buf = None
            libc.lib.munmap(ffi.cast("void *", base), size)
            self._reserved = None

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def anonymous(size: int, *, align: int = 0, hugepage: bool | None = None) -> Mapping:
    """Anonymous shared-nothing memory, optionally aligned (e.g. 2M for THP) with
    MADV_HUGEPAGE or MADV_NOHUGEPAGE applied."""
    span = size + align
    base = mmap(span, libc.PROT_READ | libc.PROT_WRITE,
                libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE)
    addr = (base + align - 1) // align * align if align else base
    mapping = Mapping(addr, size, reserved=(base, span))
    if hugepage is not None:
        mapping.madvise(libc.MADV_HUGEPAGE if hugepage else libc.MADV_NOHUGEPAGE)
    return mapping
