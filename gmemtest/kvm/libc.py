"""The few libc calls the harness needs that Python's os module does not offer with raw
arguments: ioctl with a struct pointer, mmap at an address we choose, madvise, fallocate,
vmsplice, and cachestat (no libc wrapper yet: the raw system call)."""

from __future__ import annotations

from . import uapi

# Declared in cdefs.LIBC_CDEFS and compiled with the structs (see uapi).
ffi = uapi.ffi
lib = uapi.lib

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MAP_FAILED = (1 << 64) - 1
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
SYS_cachestat = 451  # x86_64
MCL_CURRENT = 1


def ioctl(fd: int, request: int, arg: object = 0) -> tuple[int, int]:
    """ioctl(2) with a cdata pointer or an integer argument; returns (ret, errno)."""
    ptr = arg if isinstance(arg, ffi.CData) else ffi.cast("void *", arg)
    ret = lib.ioctl(fd, request, ptr)
    return ret, (ffi.errno if ret < 0 else 0)


def has_cachestat() -> bool:
    """Whether the kernel has cachestat(2) (CONFIG_CACHESTAT_SYSCALL): asked of a memfd."""
    import errno
    import os

    fd = os.memfd_create("gmemtest-cachestat")
    try:
        rng = ffi.new("struct cachestat_range *", {"off": 0, "len": 0})
        cs = ffi.new("struct cachestat *")
        ret = lib.syscall(ffi.cast("long", SYS_cachestat), ffi.cast("int", fd), rng, cs,
                          ffi.cast("unsigned int", 0))
        if ret != 0 and ffi.errno != errno.ENOSYS:
            raise OSError(ffi.errno, f"cachestat of a memfd: {os.strerror(ffi.errno)}")
        return bool(ret == 0)
    finally:
        os.close(fd)
