"""A guest_memfd file: the memory a VM's private pages live in, and with the in-place
conversion series the single record of which pages are private."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gmemtest.errors import ConversionError, KvmError

from . import libc, memory, uapi
from .fdobj import FdObject
from .ioctl import Conversion, kvm_ioctl

if TYPE_CHECKING:
    from .vm import Vm

ffi = uapi.ffi


class GuestMemfd(FdObject):
    """guest_memfd ``fd`` of ``size`` bytes created by ``vm`` with ``flags``."""

    def __init__(self, vm: Vm, fd: int, size: int, flags: int) -> None:
        self.vm = vm
        self.fd = fd
        self.size = size
        self.flags = flags
        self._convert = Conversion("KVM_SET_MEMORY_ATTRIBUTES2", "kvm_memory_attributes2",
                                   "offset", ConversionError)

    @property
    def target(self) -> str:
        return f"guest_memfd fd {self.fd}"

    def mmap(self, offset: int = 0, length: int | None = None, *, shared: bool = True,
             prot: int = libc.PROT_READ | libc.PROT_WRITE) -> memory.Mapping:
        """Map the file (needs GUEST_MEMFD_FLAG_MMAP; the kernel refuses MAP_PRIVATE).
        Use as a context manager; shared pages fault in from the file, private ones SIGBUS."""
        length = self.size - offset if length is None else length
        flags = libc.MAP_SHARED if shared else libc.MAP_PRIVATE
        return memory.Mapping(memory.mmap(length, prot, flags, self.fd, offset), length)

    def fallocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate(2) on the file, forwarded as given."""
        if libc.lib.fallocate(self.fd, mode, offset, length) != 0:
            raise KvmError("fallocate", ffi.errno,
                           {"mode": mode, "offset": offset, "length": length}, self.target)

    def allocate(self, offset: int, length: int) -> None:
        """Allocate backing pages for the range (guest_memfd takes only FALLOC_FL_KEEP_SIZE:
        its size is fixed at creation)."""
        self.fallocate(libc.FALLOC_FL_KEEP_SIZE, offset, length)

    def cached(self, offset: int = 0, length: int | None = None) -> int:
        """cachestat(2): how many pages of [offset, offset + length) the file's page cache
        holds (allocated, whether or not yet used), asked without touching any."""
        rng = ffi.new("struct cachestat_range *",
                      {"off": offset, "len": self.size - offset if length is None else length})
        cs = ffi.new("struct cachestat *")
        if libc.lib.syscall(ffi.cast("long", libc.SYS_cachestat), ffi.cast("int", self.fd), rng,
                            cs, ffi.cast("unsigned int", 0)) != 0:
            raise KvmError("cachestat", ffi.errno, {"offset": offset, "length": length},
                           target=str(self))
        return int(cs.nr_cache)

    def punch_hole(self, offset: int, length: int) -> None:
        """Free the range's pages (they read back as zero); shareability is unchanged."""
        self.fallocate(libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, offset, length)

    def set_attributes(self, offset: int, size: int, attributes: int, *, flags: int = 0,
                       reserved: list[int] | None = None, error_offset: int = 0) -> int:
        """KVM_SET_MEMORY_ATTRIBUTES2 on this file: convert [offset, offset+size) in place to
        ``attributes`` (0 = shared, KVM_MEMORY_ATTRIBUTE_PRIVATE). Raises ConversionError with
        the kernel's error_offset; returns the ioctl's return value. ``reserved`` and an
        ``error_offset`` passed in are forwarded as given (tests of them)."""
        if reserved is None and error_offset == 0:
            conv = self._convert
            ret: int = conv.call(self.fd, conv.number, offset, size, attributes, flags)
            if ret < 0:
                conv.fail(self)
            return ret
        attrs = ffi.new("struct kvm_memory_attributes2 *")  # reserved words: tests of them only
        attrs.offset, attrs.size, attrs.attributes, attrs.flags = offset, size, attributes, flags
        attrs.reserved = reserved or [0] * 11
        attrs.error_offset = error_offset
        return kvm_ioctl(self.fd, "KVM_SET_MEMORY_ATTRIBUTES2", attrs, target=self,
                         error=ConversionError)

    def to_private(self, offset: int = 0, size: int | None = None) -> int:
        return self.set_attributes(offset, self.size - offset if size is None else size,
                                   uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)

    def to_shared(self, offset: int = 0, size: int | None = None) -> int:
        return self.set_attributes(offset, self.size - offset if size is None else size, 0)

