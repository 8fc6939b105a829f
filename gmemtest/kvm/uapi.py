"""The KVM / guest_memfd uAPI that gmemtest speaks, described once.

Structs are cffi declarations copied in shape (not in text) from include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h of Linux 7.2; ioctl numbers are computed from (type, nr, struct)
with ioctl-opt. ``gmemtest abi-check`` compiles these against a kernel tree's headers and reports
any drift. Names follow the kernel's so that grep finds both sides.

Numbers owned by the unmerged in-place conversion series (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)
are not constants: see :mod:`gmemtest.kvm.seriesconf`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from cffi import FFI
from ioctl_opt import IO, IOR, IOW, IOWR

# A cffi object for a C structure or pointer (cffi's CData, which has no static type): code
# that takes one says its C type in the docstring, e.g. ``struct kvm_run *``.
CData: TypeAlias = Any

CDEFS = """
struct kvm_userspace_memory_region2 {
    uint32_t slot;
    uint32_t flags;
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t guest_memfd_offset;
    uint32_t guest_memfd;
    uint32_t pad1;
    uint64_t pad2[14];
};

/* The huge-page WIP's layout: a u8 page_order at byte 16, still 64 bytes. 7.2 has
 * {size, flags, reserved[6]} and ignores the reserved words. */
struct kvm_create_guest_memfd {
    uint64_t size;
    uint64_t flags;
    uint8_t page_order;
    uint8_t pad[7];
    uint64_t reserved[5];
};

struct kvm_memory_attributes {
    uint64_t address;
    uint64_t size;
    uint64_t attributes;
    uint64_t flags;
};

/* The series' KVM_SET_MEMORY_ATTRIBUTES2, issued on a guest_memfd fd. */
struct kvm_memory_attributes2 {
    union {
        uint64_t address;
        uint64_t offset;
    };
    uint64_t size;
    uint64_t attributes;
    uint64_t flags;
    uint64_t error_offset;
    uint64_t reserved[11];
};

struct kvm_pre_fault_memory {
    uint64_t gpa;
    uint64_t size;
    uint64_t flags;
    uint64_t padding[5];
};

struct kvm_enable_cap {
    uint32_t cap;
    uint32_t flags;
    uint64_t args[4];
    uint8_t pad[64];
};

struct kvm_stats_header {
    uint32_t flags;
    uint32_t name_size;
    uint32_t num_desc;
    uint32_t id_offset;
    uint32_t desc_offset;
    uint32_t data_offset;
};

struct kvm_stats_desc {
    uint32_t flags;
    int16_t exponent;
    uint16_t size;
    uint32_t offset;
    uint32_t bucket_size;
    char name[];
};

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
};

struct kvm_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    uint8_t padding;
};

struct kvm_dtable {
    uint64_t base;
    uint16_t limit;
    uint16_t padding[3];
};

struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss;
    struct kvm_segment tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    uint64_t interrupt_bitmap[4];
};

struct kvm_cpuid_entry2 {
    uint32_t function;
    uint32_t index;
    uint32_t flags;
    uint32_t eax;
    uint32_t ebx;
    uint32_t ecx;
    uint32_t edx;
    uint32_t padding[3];
};

struct kvm_cpuid2 {
    uint32_t nent;
    uint32_t padding;
    struct kvm_cpuid_entry2 entries[];
};

/* Only the exit unions gmemtest decodes; padding[256] fixes the union's size as in the kernel. */
struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint8_t padding1[6];
    uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection;
    uint8_t if_flag;
    uint16_t flags;
    uint64_t cr8;
    uint64_t apic_base;
    union {
        struct {
            uint64_t hardware_exit_reason;
        } hw;
        struct {
            uint64_t hardware_entry_failure_reason;
            uint32_t cpu;
        } fail_entry;
        struct {
            uint8_t direction;
            uint8_t size;
            uint16_t port;
            uint32_t count;
            uint64_t data_offset;
        } io;
        struct {
            uint64_t phys_addr;
            uint8_t data[8];
            uint32_t len;
            uint8_t is_write;
        } mmio;
        struct {
            uint64_t nr;
            uint64_t args[6];
            uint64_t ret;
            union {
                uint32_t longmode;
                uint64_t flags;
            };
        } hypercall;
        struct {
            uint32_t suberror;
            uint32_t ndata;
            uint64_t data[16];
        } internal;
        struct {
            uint64_t flags;
            uint64_t gpa;
            uint64_t size;
        } memory_fault;
        char padding[256];
    };
    uint64_t kvm_valid_regs;
    uint64_t kvm_dirty_regs;
    union {
        char padding[2048];
    } s;
};
"""

ffi = FFI()
ffi.cdef(CDEFS)

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
