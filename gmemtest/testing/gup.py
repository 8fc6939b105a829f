"""Long-term GUP pins from userspace, through the kernel's gup_test debugfs file
(CONFIG_GUP_TEST, mm/gup_test.h): the way to hold an extra reference on a page that a
conversion to private must refuse (EAGAIN)."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

from ioctl_opt import IO, IOW

from gmemtest.errors import GmemtestError, KvmError

from . import debugfs

GUP_TEST = debugfs.DEBUGFS / "gup_test"
# struct pin_longterm_test { __u64 addr; __u64 size; __u32 flags; } (24 bytes with padding)
PIN_LONGTERM_TEST = struct.Struct("<QQI4x")
PIN_LONGTERM_TEST_START = IOW(ord("g"), 7, bytearray(PIN_LONGTERM_TEST.size))
PIN_LONGTERM_TEST_STOP = IO(ord("g"), 8)
PIN_LONGTERM_TEST_FLAG_USE_WRITE = 1
LOCK = Path("/tmp/gmemtest-gup_test.lock")  # gup_test holds one pinned range system-wide


def missing() -> str | None:
    """Why pages cannot be pinned here (None when they can); an unmounted debugfs raises."""
    return debugfs.entry(GUP_TEST.name, "CONFIG_GUP_TEST")[1]


class LongTermPin:
    """pin_user_pages(FOLL_LONGTERM) on [addr, addr + size) from :meth:`start` to
    :meth:`stop` (or for a ``with`` block). One pin at a time system-wide: a second waits."""

    def __init__(self, addr: int, size: int, *, write: bool = True) -> None:
        self.addr, self.size, self.write = addr, size, write
        self._lock: int | None = None
        self._fd: int | None = None

    def start(self) -> None:
        if reason := missing():
            raise GmemtestError(f"cannot pin pages: needs {reason}")
        self._lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._fd = os.open(GUP_TEST, os.O_RDWR)
        args = bytearray(PIN_LONGTERM_TEST.pack(
            self.addr, self.size, PIN_LONGTERM_TEST_FLAG_USE_WRITE if self.write else 0))
        try:
            fcntl.ioctl(self._fd, PIN_LONGTERM_TEST_START, args)
        except OSError as e:
            self._release()
            raise KvmError("PIN_LONGTERM_TEST_START", e.errno or 0,
                           {"addr": self.addr, "size": self.size}, str(GUP_TEST)) from None

    def stop(self) -> None:
        """Unpin (gup_test's PIN_LONGTERM_TEST_STOP)."""
        if self._fd is not None:
            try:
                fcntl.ioctl(self._fd, PIN_LONGTERM_TEST_STOP)
            finally:
                self._release()

    def _release(self) -> None:
        for fd in (self._fd, self._lock):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock = None

    def __enter__(self) -> LongTermPin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def long_term_pin(addr: int, size: int, *, write: bool = True) -> LongTermPin:
    """A pin of [addr, addr + size) for a ``with`` block."""
    return LongTermPin(addr, size, write=write)
