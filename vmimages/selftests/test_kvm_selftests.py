"""The upstream KVM selftests of the kernel under test, run inside the guest as pytest cases.

$GMEMTEST_SELFTESTS names the directory `gmemtest kernel selftests` built them into. A
selftest's exit status 4 is kselftest's SKIP and becomes a pytest skip with its own message.
"""

import os
import subprocess
from pathlib import Path

import pytest

SELFTESTS = ("guest_memfd_test", "pre_fault_memory_test", "set_memory_region_test",
             "x86/private_mem_conversions_test", "x86/private_mem_kvm_exits_test")
KSFT_SKIP = 4


@pytest.mark.parametrize("name", SELFTESTS)
def test_kvm_selftest(name):
    root = os.environ.get("GMEMTEST_SELFTESTS")
    if not root:
        pytest.skip("needs $GMEMTEST_SELFTESTS (built by `gmemtest kernel selftests`)")
    binary = Path(root) / name
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=600)
    output = (proc.stdout + proc.stderr)[-4000:]
    print(output)
    if proc.returncode == KSFT_SKIP:
        pytest.skip(f"{name}: kselftest SKIP: {output.strip().splitlines()[-1:]}")
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{output}"
