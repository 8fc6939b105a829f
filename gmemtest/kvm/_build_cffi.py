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
    "#define _GNU_SOURCE\n#include <fcntl.h>\n#include <stdint.h>\n#include <sys/ioctl.h>\n"
    "#include <sys/mman.h>\n" + _names["CDEFS"] + """
static uint64_t gmemtest_rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

/* The conversion hot path in one call: fill the caller's reused struct, issue the ioctl. */
static int gmemtest_set_memory_attributes(int fd, unsigned long request,
                                          struct kvm_memory_attributes *a, uint64_t address,
                                          uint64_t size, uint64_t attributes, uint64_t flags)
{
    a->address = address;
    a->size = size;
    a->attributes = attributes;
    a->flags = flags;
    return ioctl(fd, request, a);
}

static int gmemtest_set_memory_attributes2(int fd, unsigned long request,
                                           struct kvm_memory_attributes2 *a, uint64_t offset,
                                           uint64_t size, uint64_t attributes, uint64_t flags)
{
    a->offset = offset;
    a->size = size;
    a->attributes = attributes;
    a->flags = flags;
    a->error_offset = 0;
    return ioctl(fd, request, a);
}
""")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
