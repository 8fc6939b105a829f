"""/dev/kvm: the system fd, capability queries and VM creation."""

from __future__ import annotations

import errno
import os

from . import libc, uapi
from .fdobj import FdObject
from .ioctl import kvm_ioctl
from .vm import Vm

ffi = uapi.ffi


class Kvm(FdObject):
    """An open /dev/kvm. Capabilities asked here are KVM's global answers; some (VM types,
    guest_memfd flags, memory attributes) have a more precise per-VM answer, see
    :meth:`Vm.check_extension`."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def api_version(self) -> int:
        return kvm_ioctl(self.fd, "KVM_GET_API_VERSION", target=self.path)

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else a cap-specific value."""
        return kvm_ioctl(self.fd, "KVM_CHECK_EXTENSION", cap, target=self.path,
                         arguments={"cap": cap})

    def vm_types(self) -> list[int]:
        """The VM types KVM_CREATE_VM accepts here (KVM_CAP_VM_TYPES bitmask)."""
        mask = self.check_extension(uapi.KVM_CAP_VM_TYPES)
        return [t for t in range(64) if mask & (1 << t)]

    def vcpu_mmap_size(self) -> int:
        return kvm_ioctl(self.fd, "KVM_GET_VCPU_MMAP_SIZE", target=self.path)

    def supported_cpuid(self) -> object:
        """KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can expose (a struct kvm_cpuid2 *)."""
        nent = 64
        while True:
            cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": nent, "entries": nent})
            ret, err = libc.ioctl(self.fd, uapi.KVM_GET_SUPPORTED_CPUID, cpuid)
            if ret == 0:
                return cpuid
            if err != errno.E2BIG or nent >= 4096:
                kvm_ioctl(self.fd, "KVM_GET_SUPPORTED_CPUID", cpuid, target=self.path)
            nent *= 2

    def create_vm(self, vm_type: int = uapi.KVM_X86_DEFAULT_VM) -> Vm:
        """KVM_CREATE_VM of ``vm_type`` (forwarded as given)."""
        fd = kvm_ioctl(self.fd, "KVM_CREATE_VM", vm_type, target=self.path,
                       arguments={"type": vm_type})
        return Vm(self, fd, vm_type)


