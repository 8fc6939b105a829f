"""A VM: its memslots, guest_memfd files, vCPUs, memory attributes and stats.

A Vm owns what it creates: closing it closes its vCPUs, guest_memfd files and stats fds, then the
VM fd, then unmaps memslot backings it allocated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gmemtest.errors import ConversionError

from . import memory, uapi
from .fdobj import FdObject
from .ioctl import Conversion, kvm_ioctl
from .stats import Stats

if TYPE_CHECKING:
    from .gmem import GuestMemfd
    from .kvm import Kvm
    from .vcpu import Vcpu

ffi = uapi.ffi


class Memslot:
    """One KVM_SET_USER_MEMORY_REGION2 slot as last set: ``gmem`` when guest_memfd-backed,
    ``backing`` when the harness allocated the userspace memory."""

    def __init__(self, vm: Vm, slot: int, gpa: int, size: int, *, flags: int,
                 userspace_addr: int, gmem: GuestMemfd | None, gmem_offset: int,
                 backing: memory.Mapping | None) -> None:
        self.vm = vm
        self.slot = slot
        self.gpa = gpa
        self.size = size
        self.flags = flags
        self.userspace_addr = userspace_addr
        self.gmem = gmem
        self.gmem_offset = gmem_offset
        self.backing = backing

    def _set(self, *, gpa: int | None = None, size: int | None = None,
             flags: int | None = None) -> None:
        self.vm.set_user_memory_region2(
            self.slot, self.flags if flags is None else flags, self.gpa if gpa is None else gpa,
            self.size if size is None else size, self.userspace_addr,
            self.gmem_offset, self.gmem.fd if self.gmem else 0)

    def move(self, gpa: int) -> None:
        """KVM_MR_MOVE: same memory, new guest physical address."""
        self._set(gpa=gpa)
        self.gpa = gpa

    def set_flags(self, flags: int) -> None:
        """KVM_MR_FLAGS_ONLY update (e.g. dirty logging, or clearing KVM_MEM_GUEST_MEMFD)."""
        self._set(flags=flags)
        self.flags = flags

    def delete(self) -> None:
        """KVM_MR_DELETE (memory_size 0). The backing, if the harness allocated it, is kept
        until the VM closes."""
        self._set(size=0)
        self.vm.memslots.pop(self.slot, None)
        self.vm._retired.append(self)

    def __repr__(self) -> str:
        gmem = f", gmem fd {self.gmem.fd}+{self.gmem_offset:#x}" if self.gmem else ""
        return f"<Memslot {self.slot} gpa={self.gpa:#x} size={self.size:#x}{gmem}>"


class Vm(FdObject):
    """A KVM VM of ``vm_type`` (KVM_X86_DEFAULT_VM, KVM_X86_SW_PROTECTED_VM, ...)."""

    def __init__(self, kvm: Kvm, fd: int, vm_type: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self.type = vm_type
        self.memslots: dict[int, Memslot] = {}
        self.vcpus: list[Vcpu] = []
        self.gmems: list[GuestMemfd] = []
        self._stats: Stats | None = None
        self._retired: list[Memslot] = []
        self._convert = Conversion("KVM_SET_MEMORY_ATTRIBUTES", "kvm_memory_attributes",
                                   "address", ConversionError)

    @property
    def target(self) -> str:
        return f"VM fd {self.fd} ({uapi.VM_TYPE_NAMES.get(self.type, self.type)})"

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd: the answer for this VM's type."""
        return kvm_ioctl(self.fd, "KVM_CHECK_EXTENSION", cap, target=self,
                         arguments={"cap": cap})

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> int:
        """KVM_ENABLE_CAP with up to four args (e.g. KVM_CAP_EXIT_HYPERCALL)."""
        ec = ffi.new("struct kvm_enable_cap *", {"cap": cap, "flags": flags, "args": list(args)})
        return kvm_ioctl(self.fd, "KVM_ENABLE_CAP", ec, target=self)

    # --- guest_memfd and memslots ---------------------------------------------------------

    def create_guest_memfd(self, size: int, flags: int = 0, *, page_order: int | None = None,
                           pad: list[int] | None = None,
                           reserved: list[int] | None = None) -> GuestMemfd:
        """KVM_CREATE_GUEST_MEMFD. ``page_order`` fills the huge-page WIP byte at offset 16,
        ``pad`` the 7 bytes after it; ``reserved`` sets the words after those (all forwarded
        as given)."""
        from .gmem import GuestMemfd

        args = ffi.new("struct kvm_create_guest_memfd *", {"size": size, "flags": flags})
        if pad is not None:
            args.pad = pad
        if reserved is not None:
            args.reserved = reserved
        if page_order is not None:
            args.page_order = page_order
        fd = kvm_ioctl(self.fd, "KVM_CREATE_GUEST_MEMFD", args, target=self)
        gmem = GuestMemfd(self, fd, size, flags)
        self.gmems.append(gmem)
        return gmem

    def set_user_memory_region2(self, slot: int, flags: int, gpa: int, size: int,
                                userspace_addr: int = 0, gmem_offset: int = 0,
                                gmem_fd: int = 0, pad1: int = 0,
                                pad2: list[int] | None = None) -> None:
        """KVM_SET_USER_MEMORY_REGION2, every field forwarded as given (the padding too)."""
        region = ffi.new("struct kvm_userspace_memory_region2 *", {
            "slot": slot, "flags": flags, "guest_phys_addr": gpa, "memory_size": size,
            "userspace_addr": userspace_addr, "guest_memfd_offset": gmem_offset,
            "guest_memfd": gmem_fd, "pad1": pad1, "pad2": pad2 or [0] * 14})
        kvm_ioctl(self.fd, "KVM_SET_USER_MEMORY_REGION2", region, target=self)

    def add_memslot(self, slot: int, gpa: int, size: int, *, userspace_addr: int | None = None,
                    gmem: GuestMemfd | None = None, gmem_offset: int = 0,
                    flags: int | None = None, hugepage: bool | None = None,
                    align: int = 0) -> Memslot:
        """Create memslot ``slot`` at ``gpa``. Without ``userspace_addr``, anonymous host memory
        is allocated for it (``align``/``hugepage`` shape it for THP); with ``gmem`` the slot is
        bound to that guest_memfd at ``gmem_offset`` and KVM_MEM_GUEST_MEMFD is set unless
        ``flags`` says otherwise."""
        backing = None
        if userspace_addr is None:
            backing = memory.anonymous(size, align=align, hugepage=hugepage)
            userspace_addr = backing.addr
        if flags is None:
            flags = uapi.KVM_MEM_GUEST_MEMFD if gmem is not None else 0
        try:
            self.set_user_memory_region2(slot, flags, gpa, size, userspace_addr, gmem_offset,
                                         gmem.fd if gmem else 0)
        except BaseException:
            if backing is not None:
                backing.close()
            raise
        ms = Memslot(self, slot, gpa, size, flags=flags, userspace_addr=userspace_addr,
                     gmem=gmem, gmem_offset=gmem_offset, backing=backing)
        self.memslots[slot] = ms
        return ms

    def memslot_for(self, gpa: int) -> Memslot:
        """The memslot that maps ``gpa``."""
        for ms in self.memslots.values():
            if ms.gpa <= gpa < ms.gpa + ms.size:
                return ms
        raise KeyError(f"no memslot maps gpa {gpa:#x}")

    # --- attributes, stats, vCPUs -----------------------------------------------------------

    def set_memory_attributes(self, gpa: int, size: int, attributes: int,
                              flags: int = 0) -> None:
        """KVM_SET_MEMORY_ATTRIBUTES on the VM fd (the per-VM attribute array, by GPA)."""
        conv = self._convert
        if conv.call(self.fd, conv.number, gpa, size, attributes, flags) < 0:
            conv.fail(self)

    def stats(self) -> Stats:
        """The VM's binary stats (pages_4k, pages_2m, pages_1g, ...), opened once per VM."""
        if self._stats is None:
            self._stats = Stats(kvm_ioctl(self.fd, "KVM_GET_STATS_FD", target=self))
        return self._stats

    def create_vcpu(self, vcpu_id: int | None = None) -> Vcpu:
        """KVM_CREATE_VCPU; the vCPU's kvm_run page is mapped right away."""
        from .vcpu import Vcpu

        vcpu_id = len(self.vcpus) if vcpu_id is None else vcpu_id
        fd = kvm_ioctl(self.fd, "KVM_CREATE_VCPU", vcpu_id, target=self,
                       arguments={"id": vcpu_id})
        vcpu = Vcpu(self, vcpu_id, fd)
        self.vcpus.append(vcpu)
        return vcpu

    def _before_close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.close()
        for gmem in self.gmems:
            gmem.close()
        if self._stats is not None:
            self._stats.close()

    def _after_close(self) -> None:
        for ms in [*self.memslots.values(), *self._retired]:
            if ms.backing is not None:
                ms.backing.close()
        self.memslots.clear()
        self._retired.clear()
