"""A failed kernel build is summed up by the line that says why, not the first line that
happens to contain the word "error" (objtool's str_error_r.o, error.h headers)."""

import pytest

from gmemtest.vmtier.make import first_error

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)

LOG = """\
  CC      /b/tools/objtool/str_error_r.o
  HDRINST usr/include/linux/can/error.h
In file included from ../../src/linux/arch/x86/events/intel/core.c:21:
../../src/linux/arch/x86/include/asm/kvm_host.h:2414:45: error: invalid use of undefined type
make[6]: *** [../../src/linux/scripts/Makefile.build:294: arch/x86/events/intel/core.o] Error 1
"""


@pytest.mark.parametrize("output, expected", [
    (LOG, "kvm_host.h:2414:45: error: invalid use of undefined type"),
    ("  LD      vmlinux.o\nld: guest_memfd.o: undefined reference to `kvm_gmem_foo'\n"
     "make[2]: *** [Makefile:1: vmlinux] Error 1\n", "undefined reference to `kvm_gmem_foo'"),
    ("  CC      /b/lib/error-inject.o\nmake[1]: *** No rule to make target 'bzImage'.  Stop.\n",
     "No rule to make target 'bzImage'"),
    ("  CC      /b/lib/error-inject.o\n", "make exited 2"),
])
def test_first_error_names_the_cause(output, expected):
    assert expected in first_error(output, 2)
