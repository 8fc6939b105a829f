"""The gmemtest command as users run it."""

import errno
import json
import os

import pytest

from gmemtest.errors import KvmError, VmKilled, one_line
from gmemtest.testing import ENV_CAP, ENV_HEADERS
from gmemtest.testing.plugin import target


def test_caps_table_and_json(kvm, gmemtest_cli):
    """`gmemtest caps` prints the API version, VM types and the revision of the conversion
    series; --json carries the same facts, each the kernel's own answer."""
    table = gmemtest_cli("caps")
    assert table.returncode == 0, table.stderr
    assert "KVM_GET_API_VERSION" in table.stdout and "KVM_X86_DEFAULT_VM" in table.stdout
    assert "conversion series" in table.stdout
    report = json.loads(gmemtest_cli("caps", "--json").stdout)
    assert report["api_version"] == kvm.api_version() == 12
    assert report["caps"]["KVM_CAP_GUEST_MEMFD"] == kvm.check_extension(234)
    t = target()
    assert report["revision"]["name"] == (t.revision.name if t.revision else None)
    assert report["revision"]["cap"] == t.cap
    if t.cap is not None:
        assert report["revision"]["cap_answer"] == kvm.check_extension(t.cap)


@pytest.mark.needs("vm_type:KVM_X86_SW_PROTECTED_VM")
def test_caps_without_a_cap_number_is_one_line(gmemtest_cli):
    """On a kernel that can convert memory, `gmemtest caps` with nothing naming the conversion
    capability (no headers, no number) says what to pass in one line and exits 2: no
    revision is assumed."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_HEADERS, ENV_CAP)}
    proc = gmemtest_cli("caps", env=env)
    assert proc.returncode == 2, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--kernel-headers DIR" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_caps_on_missing_device_is_an_error_line(gmemtest_cli):
    """No /dev/kvm: a line saying so and a non-zero exit, not a traceback."""
    proc = gmemtest_cli("caps", "--kvm", "/nonexistent/kvm")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gmemtest caps: error: cannot open /nonexistent/kvm: No such "
                                   "file or directory")


def test_usage_errors_exit_2(gmemtest_cli):
    proc = gmemtest_cli("abi-check")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("error, line", [
    (OSError("cannot read /proc/kallsyms"), "cannot read /proc/kallsyms"),
    (OSError(2, "No such file or directory", "/nonexistent"),
     "No such file or directory: /nonexistent"),
    (FileNotFoundError(2, "No such file or directory"), "No such file or directory"),
])
def test_os_errors_are_one_line_whatever_they_carry(error, line):
    """An OSError with only a message, or without a file name, still reads as one line (no
    'None:')."""
    assert one_line(error) == line


def test_a_killed_vm_is_named_as_such():
    """EIO from a KVM ioctl is KVM killing the VM: the error says so and points at the kernel
    health findings, as the selftests' TEST_ASSERT on KVM_RUN does."""
    e = VmKilled("KVM_RUN", errno.EIO, {}, "vcpu 0")
    assert isinstance(e, KvmError) and e.errno_name == "EIO"
    assert "the kernel killed the VM" in str(e) and "kernel health findings" in str(e)
