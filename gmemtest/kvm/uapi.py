"""The KVM / guest_memfd uAPI that gmemtest speaks, described once.

Structs are cffi declarations copied in shape (not in text) from include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h of Linux 7.2; ioctl numbers are computed from (type, nr, struct)
with ioctl-opt. ``gmemtest abi-check`` compiles these against a kernel tree's headers and reports
any drift. Names follow the kernel's so that grep finds both sides.

Numbers owned by the unmerged in-place conversion series (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)
are not constants: see :mod:`gmemtest.kvm.revision`.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeAlias

from ioctl_opt import IO, IOR, IOW, IOWR

from .cdefs import CDEFS, LIBC_CDEFS

# A cffi object for a C structure or pointer (cffi's CData, which has no static type): code
# that takes one says its C type in the docstring, e.g. ``struct kvm_run *``.
CData: TypeAlias = Any



# The structs and the libc calls as one compiled cffi module (API mode: cdefs.py built into
# gmemtest/kvm/_uapi_cffi*.so when the package is installed), so that an import parses no
# declarations and lib.ioctl is a direct C call. A checkout that was never installed falls back
# to parsing them here and reaching libc through dlopen: slower, the same behaviour.
try:
    _compiled = importlib.import_module("gmemtest.kvm._uapi_cffi")
    ffi: Any = _compiled.ffi
    lib: Any = _compiled.lib
    COMPILED = True
except ImportError:
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(CDEFS + LIBC_CDEFS)
    lib = ffi.dlopen(None)
    COMPILED = False

# Structs whose layout `gmemtest abi-check` verifies field by field.
STRUCTS: tuple[str, ...] = (
    "kvm_userspace_memory_region2",
    "kvm_create_guest_memfd",
    "kvm_memory_attributes",
    "kvm_memory_attributes2",
    "kvm_pre_fault_memory",
    "kvm_enable_cap",
    "kvm_stats_header",
    "kvm_stats_desc",
    "kvm_regs",
    "kvm_segment",
    "kvm_dtable",
    "kvm_sregs",
    "kvm_cpuid_entry2",
    "kvm_cpuid2",
    "kvm_run",
)

# Fields and structs that only kernels carrying the series (or the huge-page WIP) declare.
SERIES_STRUCTS = frozenset({"kvm_memory_attributes2"})
SERIES_FIELDS = frozenset(("kvm_create_guest_memfd", f) for f in ("page_order", "pad", "reserved"))


def _size_of(struct: str) -> bytearray:
    """A buffer as large as ``struct``: what ioctl-opt measures for the size field."""
    return bytearray(ffi.sizeof(f"struct {struct}"))


KVMIO = 0xAE

# --- system, VM and vCPU ioctls -------------------------------------------------------------
KVM_GET_API_VERSION = IO(KVMIO, 0x00)
KVM_CREATE_VM = IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = IOWR(KVMIO, 0x05, _size_of("kvm_cpuid2"))
KVM_SET_CPUID2 = IOW(KVMIO, 0x90, _size_of("kvm_cpuid2"))
KVM_CREATE_VCPU = IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION2 = IOW(KVMIO, 0x49, _size_of("kvm_userspace_memory_region2"))
KVM_RUN = IO(KVMIO, 0x80)
KVM_GET_REGS = IOR(KVMIO, 0x81, _size_of("kvm_regs"))
KVM_SET_REGS = IOW(KVMIO, 0x82, _size_of("kvm_regs"))
KVM_GET_SREGS = IOR(KVMIO, 0x83, _size_of("kvm_sregs"))
KVM_SET_SREGS = IOW(KVMIO, 0x84, _size_of("kvm_sregs"))
KVM_ENABLE_CAP = IOW(KVMIO, 0xA3, _size_of("kvm_enable_cap"))
KVM_GET_STATS_FD = IO(KVMIO, 0xCE)
KVM_SET_MEMORY_ATTRIBUTES = IOW(KVMIO, 0xD2, _size_of("kvm_memory_attributes"))
KVM_CREATE_GUEST_MEMFD = IOWR(KVMIO, 0xD4, _size_of("kvm_create_guest_memfd"))
KVM_PRE_FAULT_MEMORY = IOWR(KVMIO, 0xD5, _size_of("kvm_pre_fault_memory"))
# The series: same nr as KVM_SET_MEMORY_ATTRIBUTES, but _IOWR and the 128-byte struct, on a gmem fd.
KVM_SET_MEMORY_ATTRIBUTES2 = IOWR(KVMIO, 0xD2, _size_of("kvm_memory_attributes2"))

IOCTLS: dict[str, int] = {
    name: globals()[name] for name in (
        "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
        "KVM_GET_SUPPORTED_CPUID", "KVM_SET_CPUID2", "KVM_CREATE_VCPU",
        "KVM_SET_USER_MEMORY_REGION2", "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS",
        "KVM_SET_SREGS", "KVM_ENABLE_CAP", "KVM_GET_STATS_FD", "KVM_SET_MEMORY_ATTRIBUTES",
        "KVM_CREATE_GUEST_MEMFD", "KVM_PRE_FAULT_MEMORY", "KVM_SET_MEMORY_ATTRIBUTES2",
    )
}
IOCTL_NAMES: dict[int, str] = {value: name for name, value in IOCTLS.items()}
SERIES_IOCTLS = frozenset({"KVM_SET_MEMORY_ATTRIBUTES2"})

# --- constants ------------------------------------------------------------------------------
KVM_API_VERSION = 12

KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1
KVM_X86_SEV_VM = 2
KVM_X86_SEV_ES_VM = 3
KVM_X86_SNP_VM = 4
KVM_X86_TDX_VM = 5
VM_TYPE_NAMES = {value: name for name, value in globals().items()
                 if name.startswith("KVM_X86_") and name.endswith("_VM")}
# The VM types whose guests have private memory (kvm->arch.has_private_mem).
PRIVATE_MEM_VM_TYPES = frozenset({KVM_X86_SW_PROTECTED_VM, KVM_X86_SNP_VM, KVM_X86_TDX_VM})

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2

GUEST_MEMFD_FLAG_MMAP = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1
GUEST_MEMFD_FLAG_HUGETLB = 1 << 2  # huge-page work in progress, not upstream

KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3

KVM_HC_MAP_GPA_RANGE = 12
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4
KVM_MAP_GPA_RANGE_DECRYPTED = 0 << 4

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_MEMORY_FAULT = 39
KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_STATS_TYPE_MASK = 0xF
KVM_STATS_UNIT_MASK = 0xF << 4
KVM_STATS_BASE_MASK = 0xF << 8

# Capabilities that gmemtest reads (upstream numbers, stable ABI).
KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_EXIT_HYPERCALL = 201
KVM_CAP_BINARY_STATS_FD = 203
KVM_CAP_USER_MEMORY2 = 231
KVM_CAP_MEMORY_FAULT_INFO = 232
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_PRE_FAULT_MEMORY = 236
KVM_CAP_GUEST_MEMFD_FLAGS = 244
KVM_CAP_S390_HPAGE_2G = 249  # the highest cap number in 7.2

CAPS: dict[str, int] = {
    name: value for name, value in globals().items() if name.startswith("KVM_CAP_")
}

# Constants verified by abi-check (name -> value), besides ioctls and caps.
CONSTANTS: dict[str, int] = {
    name: globals()[name] for name in (
        "KVM_API_VERSION", "KVM_X86_DEFAULT_VM", "KVM_X86_SW_PROTECTED_VM", "KVM_X86_SEV_VM",
        "KVM_X86_SEV_ES_VM", "KVM_X86_SNP_VM", "KVM_X86_TDX_VM",
        "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "KVM_MEM_GUEST_MEMFD",
        "GUEST_MEMFD_FLAG_MMAP", "GUEST_MEMFD_FLAG_INIT_SHARED", "GUEST_MEMFD_FLAG_HUGETLB",
        "KVM_MEMORY_ATTRIBUTE_PRIVATE", "KVM_MEMORY_EXIT_FLAG_PRIVATE", "KVM_HC_MAP_GPA_RANGE",
        "KVM_MAP_GPA_RANGE_ENCRYPTED", "KVM_EXIT_UNKNOWN", "KVM_EXIT_IO", "KVM_EXIT_HYPERCALL",
        "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY",
        "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_MEMORY_FAULT", "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT",
        "KVM_STATS_TYPE_MASK", "KVM_STATS_UNIT_MASK", "KVM_STATS_BASE_MASK",
    )
}
CONSTANTS.update(CAPS)
SERIES_CONSTANTS = frozenset({"GUEST_MEMFD_FLAG_HUGETLB"})

PAGE_SIZE = 4096
HUGE_2M = 2 << 20
HUGE_1G = 1 << 30
