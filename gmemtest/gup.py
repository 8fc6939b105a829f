"""Long-term GUP pins from userspace, through the kernel's gup_test debugfs file
(CONFIG_GUP_TEST, mm/gup_test.h): the way to hold an extra reference on a page that a
conversion to private must refuse (EAGAIN)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from ioctl_opt import IO, IOW

from .errors import GmemtestError, KvmError

GUP_TEST = Path("/sys/kernel/debug/gup_test")
# struct pin_longterm_test { __u64 addr; __u64 size; __u32 flags; } (24 bytes with padding)
PIN_LONGTERM_TEST = struct.Struct("<QQI4x")
PIN_LONGTERM_TEST_START = IOW(ord("g"), 7, bytearray(PIN_LONGTERM_TEST.size))
PIN_LONGTERM_TEST_STOP = IO(ord("g"), 8)
PIN_LONGTERM_TEST_FLAG_USE_WRITE = 1
LOCK = Path("/tmp/gmemtest-gup_test.lock")  # gup_test holds one pinned range system-wide


@contextlib.contextmanager
def long_term_pin(addr: int, size: int, *, write: bool = True) -> Iterator[None]:
    """pin_user_pages(FOLL_LONGTERM) on [addr, addr + size) for the duration."""
    if not GUP_TEST.exists():
        raise GmemtestError(f"{GUP_TEST} missing: needs CONFIG_GUP_TEST and debugfs")
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fd = os.open(GUP_TEST, os.O_RDWR)
        try:
            args = bytearray(PIN_LONGTERM_TEST.pack(
                addr, size, PIN_LONGTERM_TEST_FLAG_USE_WRITE if write else 0))
            try:
                fcntl.ioctl(fd, PIN_LONGTERM_TEST_START, args)
            except OSError as e:
                raise KvmError("PIN_LONGTERM_TEST_START", e.errno,
                               {"addr": addr, "size": size}, str(GUP_TEST)) from None
            try:
                yield
            finally:
                fcntl.ioctl(fd, PIN_LONGTERM_TEST_STOP)
        finally:
            os.close(fd)
