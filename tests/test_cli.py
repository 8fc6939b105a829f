"""The gmemtest command as users run it."""

import errno
import json
import os
from pathlib import Path

import pytest

from gmemtest.cli import main, parse
from gmemtest.errors import KvmError, VmKilled, one_line
from gmemtest.testing import ENV_CAP, ENV_HEADERS
from gmemtest.testing.plugin import target

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)


def test_caps_table_and_json(kvm, gmemtest_cli):
    """`gmemtest caps` prints the API version, VM types and the revision of the conversion
    series; --json carries the same facts, each the kernel's own answer."""
    table = gmemtest_cli("caps")
    assert table.returncode == 0, table.stderr
    assert "KVM_GET_API_VERSION" in table.stdout
    assert "KVM_X86_DEFAULT_VM" in table.stdout
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
    assert len(lines) == 1, proc.stderr
    assert "--kernel-headers DIR" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_caps_on_missing_device_is_an_error_line(gmemtest_cli):
    """No /dev/kvm: a line saying so and a non-zero exit, not a traceback."""
    proc = gmemtest_cli("caps", "--kvm", "/nonexistent/kvm")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gmemtest caps: error: cannot open /nonexistent/kvm: No such "
                                   "file or directory")


def test_usage_errors_exit_2(gmemtest_cli):
    proc = gmemtest_cli("abi-check")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


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
    assert isinstance(e, KvmError)
    assert e.errno_name == "EIO"
    assert "the kernel killed the VM" in str(e)
    assert "kernel health findings" in str(e)


@pytest.mark.host_only
def test_options_after_the_positionals_are_honoured(tmp_path):
    """An option placed after the positionals is the option, not pytest's: `diff A B --out X`
    writes to X; `series walk MBOX --series-version 2 --src T --debug` walks version 2 on T
    with the debug config. pytest's arguments are what follows --."""
    args = parse(["diff", "kpatches", "kpatches:v8", "--out", str(tmp_path), "--", "-k", "x"])
    assert (args.a, args.b, args.out, args.pytest_args) == \
        ("kpatches", "kpatches:v8", str(tmp_path), ["-k", "x"])
    args = parse(["series", "walk", "m.mbox", "--series-version", "2", "--src", "/t", "--debug"])
    assert (args.mbox, args.series_version, args.src, args.debug, args.pytest_args) == \
        ("m.mbox", 2, "/t", True, [])
    args = parse(["caps", "--kernel-headers", "/h", "--gmem-attr-cap", "0xfc"])
    assert (args.kernel_headers, args.gmem_attr_cap) == (Path("/h"), 252)


@pytest.mark.host_only  # the command line, not the kernel
@pytest.mark.parametrize("argv, message", [
    (["diff", "kpatches", "kpatches:v8", "-k", "x"], "unrecognized arguments: -k x"),
    (["caps", "--", "-k", "x"], "gmemtest caps runs no tests: it takes no pytest arguments"),
    (["kernel", "build", "--", "-q"], "gmemtest kernel build runs no tests"),
    (["vm-test", "--timeout", "soon"], "'soon' is not a number of seconds"),
    (["vm-test", "--revision", "v9"], "GMEMTEST_REVISION='v9': expected v8 or applied"),
    (["vm-test", "--kpatches", "v9"], "--kpatches v9: expected one of applied, v8"),
    (["vm-test", "--series", "x.mbox", "--kpatches", "v8"], "--series is the patches"),
    (["vm-test", "--series-version", "2"], "--series-version needs --series MBOX"),
    (["kernel", "show", "/nonexistent"], "/nonexistent: no such file or directory"),
])
def test_a_command_line_mistake_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert os.environ.get("GMEMTEST_REVISION") != "v9"


@pytest.mark.host_only
def test_diff_checks_both_sides_before_building_either(gmemtest_cli, tmp_path):
    """B does not exist: one line naming it, before A is built or booted; no report."""
    proc = gmemtest_cli("diff", "kpatches", str(tmp_path / "nosuch"), "--out",
                        str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip() == (f"gmemtest diff: error: {tmp_path / 'nosuch'}: no such file "
                                   "or directory (expected a built kernel, a patch directory, a "
                                   "series mbox, a kernel tree or kpatches[:FORM])")
    assert not (tmp_path / "out").exists()


@pytest.mark.host_only
def test_anything_unexpected_is_one_line_naming_the_traceback(monkeypatch, capsys,
                                                              tmp_path):
    """A bug of gmemtest itself (here an exception no command expects) is still one line:
    it names the log file that holds the traceback."""
    from gmemtest import caps

    monkeypatch.setenv("GMEMTEST_CACHE", str(tmp_path))

    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(caps, "collect", broken)
    assert main(["caps"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gmemtest caps: error: internal error: ZeroDivisionError: a bug "
                          "(the traceback is in ")
    log = Path(err.split("the traceback is in ")[1].split(";")[0])
    assert log.is_file()
    assert "Traceback" in log.read_text()
    assert "ZeroDivisionError" in          log.read_text()
