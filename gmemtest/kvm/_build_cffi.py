"""Builds gmemtest.kvm._uapi_cffi, the compiled form of cdefs.py (setup.py's cffi_modules;
run at install, where only setuptools and cffi exist, so cdefs.py is read as a file, not
imported). The C source is the declarations themselves: every struct is written out in full,
so the compiler lays it out as the kernel's headers do; the libc calls come from libc's own
headers."""

from pathlib import Path

from cffi import FFI

_names: dict[str, str] = {}
exec((Path(__file__).parent / "cdefs.py").read_text(), _names)

ffibuilder = FFI()
ffibuilder.cdef(_names["CDEFS"] + _names["LIBC_CDEFS"] + _names["HOST_CDEFS"]
                + _names["HOT_CDEFS"])
ffibuilder.set_source(
    "gmemtest.kvm._uapi_cffi",
    "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stddef.h>\n#include <stdint.h>\n"
    "#include <sys/ioctl.h>\n#include <sys/mman.h>\n#include <unistd.h>\n" + _names["CDEFS"] + """
static uint64_t gmemtest_rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/*
 * The conversion hot path in one call. KVM_SET_MEMORY_ATTRIBUTES2's struct begins with the four
 * fields of KVM_SET_MEMORY_ATTRIBUTES' (the series extends it), so one struct on the C stack
 * serves both ioctls; the VM ioctl reads only its first 32 bytes. A call allocates nothing and
 * threads share nothing. A refused conversion's struct (with the kernel's error_offset) is kept
 * per thread, for the caller's error report.
 */
_Static_assert(offsetof(struct kvm_memory_attributes2, flags) ==
               offsetof(struct kvm_memory_attributes, flags), "the VM ioctl's fields first");
_Static_assert(offsetof(struct kvm_memory_attributes2, error_offset) ==
               sizeof(struct kvm_memory_attributes), "the VM ioctl's struct is the prefix");

static __thread struct kvm_memory_attributes2 refused_conversion;

static int gmemtest_convert(int fd, unsigned long request, uint64_t start, uint64_t size,
                            uint64_t attributes, uint64_t flags)
{
    struct kvm_memory_attributes2 a = {
        .address = start, .size = size, .attributes = attributes, .flags = flags,
    };
    int ret = ioctl(fd, request, &a);

    if (ret < 0)
        refused_conversion = a;
    return ret;
}

static struct kvm_memory_attributes2 *gmemtest_refused_conversion(void)
{
    return &refused_conversion;
}
""")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
