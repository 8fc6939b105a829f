"""The two ways to convert memory between shared and private, behind one interface.

``vm-attributes`` (upstream): KVM_SET_MEMORY_ATTRIBUTES on the VM, by GPA; private pages come
from guest_memfd and shared pages from the memslot's userspace_addr (two allocations).
``gmem`` (the in-place series): KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd, by file offset;
one guest_memfd page serves the gfn in both states and the host sees shared pages through the
file's mmap.
"""

from __future__ import annotations

from dataclasses import dataclass

from gmemtest.errors import GmemtestError
from gmemtest.kvm import memory, uapi
from gmemtest.kvm import revision as rev
from gmemtest.kvm.gmem import GuestMemfd
from gmemtest.kvm.kvm import Kvm
from gmemtest.kvm.vm import Memslot, Vm

from . import PRIVATE


@dataclass
class GuestMemory:
    """A memslot of ``size`` bytes at ``gpa`` with its guest_memfd and the host's view of the
    shared backing (userspace memory, or the guest_memfd mmap)."""

    slot: Memslot
    gmem: GuestMemfd
    view: memory.Mapping
    gpa: int
    size: int


class ConversionRoute:
    name = ""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    @staticmethod
    def missing(kvm: Kvm, target: rev.Target, switch: rev.Switch) -> str | None:
        """Why this kernel cannot convert through this path (None when it can)."""
        raise NotImplementedError

    def memory(self, slot: int, gpa: int, size: int, *, private: bool,
               gmem_offset: int = 0, gmem: GuestMemfd | None = None) -> GuestMemory:
        raise NotImplementedError

    def convert(self, mem: GuestMemory, offset: int, size: int, *, private: bool) -> None:
        """Convert bytes [offset, offset + size) of ``mem``."""
        raise NotImplementedError

    def to_private(self, mem: GuestMemory, offset: int = 0, size: int | None = None) -> None:
        self.convert(mem, offset, mem.size - offset if size is None else size, private=True)

    def to_shared(self, mem: GuestMemory, offset: int = 0, size: int | None = None) -> None:
        self.convert(mem, offset, mem.size - offset if size is None else size, private=False)


class VmAttributesRoute(ConversionRoute):
    name = "vm-attributes"

    @staticmethod
    def missing(kvm: Kvm, target: rev.Target, switch: rev.Switch) -> str | None:
        if kvm.check_extension(uapi.KVM_CAP_MEMORY_ATTRIBUTES) & PRIVATE:
            return None
        config = rev.running_config()
        if config is not None and not rev.vm_memory_attributes(config):
            return (f"no per-VM memory attributes: {rev.VM_ATTRIBUTES_OPTIONS[0]}=n "
                    "(KVM_SET_MEMORY_ATTRIBUTES is ENOTTY)")
        if switch.on:
            return f"KVM_CAP_MEMORY_ATTRIBUTES reports no PRIVATE: in-place conversion on " \
                   f"({rev.PARAM_NAME}: {switch.describe()})"
        if config is not None:
            raise GmemtestError(
                "contradiction: per-VM memory attributes built in "
                f"({', '.join(o for o in rev.VM_ATTRIBUTES_OPTIONS if config.get(o) == 'y')}) "
                f"and in-place conversion off ({rev.PARAM_NAME}: {switch.describe()}), but "
                "KVM_CAP_MEMORY_ATTRIBUTES on /dev/kvm reports no PRIVATE")
        return "KVM_CAP_MEMORY_ATTRIBUTES reports no PRIVATE"

    def memory(self, slot: int, gpa: int, size: int, *, private: bool,
               gmem_offset: int = 0, gmem: GuestMemfd | None = None) -> GuestMemory:
        gmem = gmem or self.vm.create_guest_memfd(size, 0)
        ms = self.vm.add_memslot(slot, gpa, size, gmem=gmem, gmem_offset=gmem_offset)
        assert ms.backing is not None
        if private:
            self.vm.set_memory_attributes(gpa, size, PRIVATE)
        return GuestMemory(ms, gmem, ms.backing, gpa, size)

    def convert(self, mem: GuestMemory, offset: int, size: int, *, private: bool) -> None:
        self.vm.set_memory_attributes(mem.slot.gpa + offset, size, PRIVATE if private else 0)


class GmemRoute(ConversionRoute):
    name = "gmem"

    @staticmethod
    def missing(kvm: Kvm, target: rev.Target, switch: rev.Switch) -> str | None:
        if target.cap is None:
            if switch.param is not None:  # a commit of the series before its ioctl
                return (f"{rev.CAP_NAME}: the series in part: {rev.PARAM_NAME} "
                        f"({switch.describe()}) without the conversion ioctl ({target.source})")
            return f"{rev.CAP_NAME}: a kernel without the conversion series ({target.source})"
        if switch.on:
            return None
        return (f"{rev.CAP_NAME} ({target.cap}) reports no PRIVATE: in-place conversion off "
                f"({rev.PARAM_NAME}: {switch.describe()})")

    def memory(self, slot: int, gpa: int, size: int, *, private: bool,
               gmem_offset: int = 0, gmem: GuestMemfd | None = None) -> GuestMemory:
        flags = uapi.GUEST_MEMFD_FLAG_MMAP | (0 if private else uapi.GUEST_MEMFD_FLAG_INIT_SHARED)
        gmem = gmem or self.vm.create_guest_memfd(size, flags)
        view = gmem.mmap(gmem_offset, size)
        ms = self.vm.add_memslot(slot, gpa, size, gmem=gmem, gmem_offset=gmem_offset,
                                 userspace_addr=view.addr)
        ms.backing = view  # unmapped when the VM closes
        return GuestMemory(ms, gmem, view, gpa, size)

    def convert(self, mem: GuestMemory, offset: int, size: int, *, private: bool) -> None:
        mem.gmem.set_attributes(mem.slot.gmem_offset + offset, size, PRIVATE if private else 0)


ROUTES: dict[str, type[ConversionRoute]] = {p.name: p for p in (VmAttributesRoute, GmemRoute)}
