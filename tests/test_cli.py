"""The gmemtest command as users run it."""

import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "gmemtest.cli", *args], capture_output=True,
                          text=True)


def test_caps_table_and_json(kvm):
    """`gmemtest caps` prints the API version and VM types; --json carries the same facts."""
    table = run("caps")
    assert table.returncode == 0, table.stderr
    assert "KVM_GET_API_VERSION" in table.stdout and "KVM_X86_DEFAULT_VM" in table.stdout
    report = json.loads(run("caps", "--json").stdout)
    assert report["api_version"] == 12
    assert report["caps"]["KVM_CAP_GUEST_MEMFD"] == kvm.check_extension(234)
    assert report["conversion_cap"]["number"] > 0


def test_caps_on_missing_device_is_an_error_line():
    """No /dev/kvm: a line saying so and a non-zero exit, not a traceback."""
    proc = run("caps", "--kvm", "/nonexistent/kvm")
    assert proc.returncode == 1
    assert "cannot open /nonexistent/kvm" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_usage_errors_exit_2():
    proc = run("abi-check")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
