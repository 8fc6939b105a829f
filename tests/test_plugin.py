"""The plugin cannot turn an error into a pass: a `needs` word or value it does not know stops
the run at collection, and a probe that cannot tell (debugfs not mounted) fails the test
loudly instead of skipping it as if the kernel lacked the capability. Each case runs pytest on
a small test file in a process of its own, as the suite itself runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gmemtest.errors import GmemtestError
from gmemtest.testing import TEST_LIMITS, kallsyms, kselftest
from gmemtest.testing.debugfs import DEBUGFS

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)

CHECKOUT = Path(__file__).resolve().parent.parent


def pytest_on(tmp_path: Path, body: str, *, prefix: list[str] = (), args: list[str] = (),
              results: Path | None = None) -> subprocess.CompletedProcess:
    test = tmp_path / "test_case.py"
    test.write_text("import pytest\n\n" + body)
    # The inner session is a session of its own: not recorded into this run's results or gcov.
    env = {k: v for k, v in os.environ.items()
           if k not in ("GMEMTEST_RESULTS", "GMEMTEST_GCOV") and not k.startswith("PYTEST_XDIST")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    if results is not None:
        env["GMEMTEST_RESULTS"] = str(results)
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-p", "gmemtest.testing.plugin",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", *args, str(test)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


@pytest.mark.parametrize("need", ["switch:of", "route:gmemfd", "KVM_CAP_NOT_A_CAP", "failslab:1",
                                  "fail_page_alloc:under", "gmem_flags:MMAP+HUGE",
                                  "vm_type:KVM_X86_PVM"])
def test_a_misspelt_need_stops_the_run(tmp_path, need):
    """A typo in a needs word or value is a usage error naming the test and the need (pytest
    exits 4 and runs nothing), never a need that means 'absent' and skips."""
    proc = pytest_on(tmp_path, f"@pytest.mark.needs({need!r})\ndef test_x():\n    pass\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"test_case.py::test_x: unknown need {need!r}" in proc.stderr
    assert "passed" not in proc.stdout
    assert "skipped" not in proc.stdout


def test_unmounted_debugfs_is_an_error_not_a_skip(tmp_path):
    """With debugfs not mounted (a mount namespace without it), a test that needs failslab
    errors, the line naming the mount command; it is not skipped as if the kernel had no
    CONFIG_FAILSLAB. Where the kernel has no debugfs at all, it is skipped naming
    CONFIG_DEBUG_FS."""
    if "debugfs" not in Path("/proc/filesystems").read_text():
        pytest.skip("needs CONFIG_DEBUG_FS: no debugfs in /proc/filesystems")
    proc = pytest_on(tmp_path, "@pytest.mark.needs('failslab')\ndef test_x():\n    pass\n",
                     prefix=["unshare", "--mount", "sh", "-c",
                             f"umount {DEBUGFS} 2>/dev/null; exec \"$@\"", "sh"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout, proc.stdout
    assert f"debugfs is not mounted at {DEBUGFS} (needed for failslab): mount -t debugfs " \
           f"none {DEBUGFS}" in proc.stdout


def test_a_test_past_its_timeout_is_one_named_failure(tmp_path):
    """With each test in a process of its own (the guest's default), pytest-timeout's alarm
    rings in the parent: the slow test fails alone, stopped and named with its line, and the
    tests after it still run (before, the alarm ended the whole session in an INTERNALERROR)."""
    proc = pytest_on(tmp_path, "import time\n\n\ndef test_before():\n    pass\n\n\n"
                     "def test_slow():\n    time.sleep(600)\n\n\ndef test_after():\n    pass\n",
                     args=["-p", "pytest_timeout", "--isolate", "--timeout=2"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout
    assert "the test outlived its timeout (2 s) and was stopped, at " \
           f'"{tmp_path / "test_case.py"}", line 11 in test_slow' in proc.stdout, proc.stdout


def test_a_test_deaf_to_sigabrt_is_killed_and_the_run_goes_on(tmp_path):
    """A test process that SIGABRT does not stop (it ignores the signal, as one stuck in the
    kernel cannot take it) is killed a few seconds later; it fails, named, and the tests after
    it run."""
    proc = pytest_on(tmp_path, "import signal\nimport time\n\n\ndef test_deaf():\n"
                     "    signal.signal(signal.SIGABRT, signal.SIG_IGN)\n    time.sleep(600)\n\n\n"
                     "def test_after():\n    pass\n",
                     args=["-p", "pytest_timeout", "--isolate", "--timeout=2"])
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "FAILED test_case.py::test_deaf" in proc.stdout, proc.stdout
    assert "the test outlived its timeout (2 s) and was stopped\n" in proc.stdout, proc.stdout


def test_an_isolated_test_skipping_on_a_missing_need_takes_no_child(tmp_path, monkeypatch):
    """With each test in a process of its own, one that skips on a need the kernel lacks is
    reported by the session's process itself (no fork for a test none of whose code runs),
    naming the need; the others still run in children of that process."""
    monkeypatch.delenv(kselftest.ENV, raising=False)
    (tmp_path / "conftest.py").write_text(
        "import os\n\n\ndef pytest_runtest_teardown(item):\n"
        "    with open('setups.txt', 'a') as f:\n"
        "        f.write(f'{item.name} {os.getpid()} {os.getppid()}\\n')\n")
    proc = pytest_on(tmp_path, "@pytest.mark.needs('kselftests')\ndef test_skips():\n"
                     "    pass\n\n\ndef test_runs():\n    pass\n", args=["--isolate", "-rs"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    assert f"needs kselftests: ${kselftest.ENV} naming" in proc.stdout, proc.stdout
    setups = {name: (pid, ppid) for name, pid, ppid in
              (line.split() for line in (tmp_path / "setups.txt").read_text().splitlines())}
    assert setups["test_runs"][1] == setups["test_skips"][0]


def test_a_test_with_a_limit_of_its_own_is_stopped_at_it(tmp_path):
    """A boot's test-limits.json (a mutant's boot gives each test three times its own time)
    gives the tests it names their own timeout in place of --timeout; the others keep it."""
    results = tmp_path / "results"
    results.mkdir()
    (results / TEST_LIMITS).write_text('{"test_case.py::test_slow": 2}')
    proc = pytest_on(tmp_path, "import time\n\n\ndef test_slow():\n    time.sleep(600)\n\n\n"
                     "def test_quick():\n    time.sleep(3)\n",
                     args=["-p", "pytest_timeout", "-p", "gmemtest.testing.guest_writer",
                           "--isolate", "--timeout=300"], results=results)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "the test outlived its timeout (2 s) and was stopped, at " \
           f'"{tmp_path / "test_case.py"}", line 7 in test_slow' in proc.stdout, proc.stdout
    assert "not ok 1 test_case.py::test_slow" in (results / "results.ktap").read_text()


KALLSYMS = """\
ffffffff81400000 T kvm_gmem_get_folio
ffffffff81400000 t kvm_gmem_get_folio.alias
ffffffff81400080 d kvm_gmem_fops
ffffffff814001a0 t kvm_gmem_fault_user_mapping
ffffffff814002f0 T kvm_gmem_get_pfn\t[kvm]
"""


def test_a_functions_text_ends_at_the_next_function(tmp_path, monkeypatch):
    """The span a fault is aimed at runs from the function's address to the next text
    symbol's (aliases at the same address and data symbols between do not end it); a name the
    kernel does not have, or a table whose addresses kptr_restrict hides, is one error line."""
    table = tmp_path / "kallsyms"
    monkeypatch.setattr(kallsyms, "KALLSYMS", table)
    table.write_text(KALLSYMS)
    assert kallsyms.text_span("kvm_gmem_get_folio") == (0xffffffff81400000, 0xffffffff814001a0)
    assert kallsyms.text_span("kvm_gmem_fault_user_mapping") == (0xffffffff814001a0,
                                                                 0xffffffff814002f0)
    with pytest.raises(GmemtestError, match="kvm_gmem_fault is not in .*kallsyms"):
        kallsyms.text_span("kvm_gmem_fault")
    with pytest.raises(GmemtestError, match="last text symbol"):
        kallsyms.text_span("kvm_gmem_get_pfn")
    table.write_text("".join("0" * 16 + line[16:] for line in KALLSYMS.splitlines(True)))
    with pytest.raises(GmemtestError, match="kptr_restrict"):
        kallsyms.text_span("kvm_gmem_get_folio")


@pytest.mark.parametrize("harness, selected", [
    ("", ["test_kernel"]), ("1", ["test_harness", "test_marked", "test_in_a_harness_module"])])
# (test_harness needs a kernel capability, test_host_side nothing of the kernel: make test
# runs that one, on the host)
def test_the_guest_runs_the_kernels_tests_and_the_harness_boot_the_harnesss(tmp_path, harness,
                                                                         selected):
    """In the guest a test of the suite runs when it opens /dev/kvm (the kvm fixture) and is
    not marked harness; the harness boot ($GMEMTEST_HARNESS=1) runs the others instead, those
    that ask something of the kernel."""
    suite = tmp_path / "tests"
    suite.mkdir()
    (suite / "test_case.py").write_text(
        "import pytest\n\n"
        "def test_kernel(kvm):\n    pass\n\n"
        "@pytest.mark.needs('KVM_CAP_GUEST_MEMFD')\ndef test_harness():\n    pass\n\n"
        "def test_host_side():\n    pass\n\n"
        "@pytest.mark.harness\ndef test_marked(kvm):\n    pass\n")
    (suite / "test_other.py").write_text(
        "import pytest\n\npytestmark = pytest.mark.harness\n\n"
        "def test_in_a_harness_module(kvm):\n    pass\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GMEMTEST_RESULTS", "GMEMTEST_GCOV") and not k.startswith("PYTEST_XDIST")}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", GMEMTEST_IN_GUEST="1",
               GMEMTEST_HARNESS=harness, GMEMTEST_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "gmemtest.testing.plugin",
                           "-p", "no:cacheprovider", "--co", "-q", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", "tests"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line.split("::")[-1] for line in proc.stdout.splitlines() if "::" in line]
    assert ids == selected, proc.stdout


@pytest.mark.parametrize("phase", ["setup", "call", "teardown"])
def test_a_known_deviation_accepts_only_its_errno_in_every_phase(tmp_path, phase):
    """xfail_on(MODULE, errno) where the module is loaded: a KvmError of that errno, in the
    test's fixtures or its body, is the expected failure; one of another errno, in any phase,
    fails the test naming both (an errno in setup used to pass as the deviation)."""
    raise_in = {"setup": "raise KvmError('KVM_X', errno.ENOENT)\n    yield",
                "call": "yield", "teardown": "yield\n    raise KvmError('KVM_X', errno.ENOENT)"}
    body = ("import errno\nfrom gmemtest.errors import KvmError\n\n"
            f"@pytest.fixture\ndef broken():\n    {raise_in[phase]}\n\n"
            "@pytest.mark.xfail_on('kernel', errno.EINVAL, reason='a deviation')\n"
            "def test_x(broken):\n"
            + ("    raise KvmError('KVM_X', errno.ENOENT)\n" if phase == "call" else
               "    raise KvmError('KVM_X', errno.EINVAL)\n"))
    proc = pytest_on(tmp_path, body, args=["-p", "no:xdist"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "expected the known deviation's EINVAL, got: KVM_X(): ENOENT" in proc.stdout, proc.stdout
    summary = proc.stdout.splitlines()[-1]
    if phase == "teardown":  # the call's EINVAL is the deviation; the teardown's ENOENT not
        assert "1 xfailed, 1 error" in summary, summary
    else:
        assert "xfailed" not in summary, summary
