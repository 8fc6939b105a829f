"""The C declarations of the uAPI structs gmemtest uses and of the libc calls it makes with raw
arguments. Plain text with no imports: gmemtest/kvm/_build_cffi.py compiles them at install
(when only setuptools and cffi are there), and :mod:`gmemtest.kvm.uapi` is their one user.
"""

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

/* The hypercall exit's struct, anonymous in the kernel's header: named here because cffi's
 * compiled mode mis-sizes an anonymous struct that holds an anonymous union (80 bytes, where the
 * compiler says 72). Same layout, same field names. */
struct kvm_run_hypercall {
    uint64_t nr;
    uint64_t args[6];
    uint64_t ret;
    union {
        uint32_t longmode;
        uint64_t flags;
    };
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
        struct kvm_run_hypercall hypercall;
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

/* linux/mman.h (6.5): cachestat(2) */
struct cachestat_range { uint64_t off; uint64_t len; };
struct cachestat { uint64_t nr_cache; uint64_t nr_dirty; uint64_t nr_writeback;
                   uint64_t nr_evicted; uint64_t nr_recently_evicted; };
"""

# The libc calls Python's os module does not offer with raw arguments: ioctl with a struct
# pointer, mmap at an address we choose, madvise, fallocate.
LIBC_CDEFS = """
int ioctl(int fd, unsigned long request, void *arg);
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t length);
int madvise(void *addr, size_t length, int advice);
int fallocate(int fd, int mode, long offset, long len);
struct iovec { void *iov_base; size_t iov_len; };
long vmsplice(int fd, const struct iovec *iov, unsigned long nr_segs, unsigned int flags);
long syscall(long number, ...);
int mlockall(int flags);
int munlockall(void);
"""

# The host's time stamp counter (x86 RDTSC): a TCG guest's TSC is the host's, and the runner
# tells the guest kernel its rate (gmemtest.vmtier.host.tsc_khz). Defined in _build_cffi.py.
HOST_CDEFS = """
uint64_t gmemtest_rdtsc(void);
"""

# The conversions' hot path: one compiled call fills the struct (on the C stack) and issues
# KVM_SET_MEMORY_ATTRIBUTES or KVM_SET_MEMORY_ATTRIBUTES2 (the request number from uapi.IOCTLS;
# the second's struct begins with the first's fields); a refused one's struct is kept per
# thread, read back for the error. Defined in _build_cffi.py; only the compiled module has them
# (gmemtest.kvm.ioctl.Conversion does the same from Python where it was not compiled).
HOT_CDEFS = """
int gmemtest_convert(int fd, unsigned long request, uint64_t start, uint64_t size,
                     uint64_t attributes, uint64_t flags);
struct kvm_memory_attributes2 *gmemtest_refused_conversion(void);
"""
