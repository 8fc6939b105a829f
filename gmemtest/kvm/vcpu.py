"""A vCPU: registers, CPUID, KVM_RUN and KVM_PRE_FAULT_MEMORY."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from gmemtest.errors import KvmError

from . import libc, memory, uapi
from .exits import Exit, decode
from .fdobj import FdObject
from .ioctl import kvm_ioctl

if TYPE_CHECKING:
    from .vm import Vm

ffi = uapi.ffi


class Vcpu(FdObject):
    """vCPU ``id`` of ``vm``; ``run`` is its mapped struct kvm_run."""

    def __init__(self, vm: Vm, vcpu_id: int, fd: int) -> None:
        self.vm = vm
        self.id = vcpu_id
        self.fd = fd
        size = vm.kvm.vcpu_mmap_size()
        self._run_map = memory.Mapping(
            memory.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd), size)
        self.run_struct: Any = ffi.cast("struct kvm_run *", self._run_map.addr)

    @property
    def target(self) -> str:
        return f"vCPU {self.id} fd {self.fd}"

    def get_regs(self) -> Any:
        regs = ffi.new("struct kvm_regs *")
        kvm_ioctl(self.fd, "KVM_GET_REGS", regs, target=self, arguments={})
        return regs

    def set_regs(self, regs: Any) -> None:
        kvm_ioctl(self.fd, "KVM_SET_REGS", regs, target=self)

    def get_sregs(self) -> Any:
        sregs = ffi.new("struct kvm_sregs *")
        kvm_ioctl(self.fd, "KVM_GET_SREGS", sregs, target=self, arguments={})
        return sregs

    def set_sregs(self, sregs: Any) -> None:
        kvm_ioctl(self.fd, "KVM_SET_SREGS", sregs, target=self, arguments={})

    def set_cpuid(self, cpuid: Any) -> None:
        """KVM_SET_CPUID2 (long mode needs CPUID.LM in the guest's CPUID)."""
        kvm_ioctl(self.fd, "KVM_SET_CPUID2", cpuid, target=self,
                  arguments={"nent": cpuid.nent})

    def run(self) -> Exit:
        """KVM_RUN until the next exit to userspace. KVM_EXIT_MEMORY_FAULT comes back with
        -1/EFAULT from the kernel; that is a result, returned as a MemoryFault exit."""
        ret, err = libc.ioctl(self.fd, uapi.KVM_RUN, 0)
        if ret < 0 and not (err == errno.EFAULT
                            and self.run_struct.exit_reason == uapi.KVM_EXIT_MEMORY_FAULT):
            raise KvmError("KVM_RUN", err, {}, self.target)
        return decode(self.run_struct)

    def complete_hypercall(self, ret: int) -> None:
        """Set the value the guest's hypercall returns when the vCPU runs again."""
        self.run_struct.hypercall.ret = ret

    def pre_fault_memory(self, gpa: int, size: int, flags: int = 0) -> tuple[int, int]:
        """One KVM_PRE_FAULT_MEMORY call: map [gpa, gpa+size) in KVM's page tables without
        running the guest. Returns the (gpa, size) the kernel left unprocessed."""
        args = ffi.new("struct kvm_pre_fault_memory *", {"gpa": gpa, "size": size,
                                                         "flags": flags})
        kvm_ioctl(self.fd, "KVM_PRE_FAULT_MEMORY", args, target=self)
        return args.gpa, args.size

    def pre_fault(self, gpa: int, size: int) -> None:
        """KVM_PRE_FAULT_MEMORY repeated until the whole range is mapped."""
        while size:
            gpa, size = self.pre_fault_memory(gpa, size)

    def _before_close(self) -> None:
        self._run_map.close()
