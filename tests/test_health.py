"""The kernel-health detector on recorded kernel logs: every kind of report is found and named,
and an ordinary boot log has none."""

from pathlib import Path

import pytest

from gmemtest.results import health

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)

LOGS = Path(__file__).parent / "data/kernel-logs"


@pytest.mark.parametrize("log, kind, first_line", [
    ("warning.log", "WARNING",
     "WARNING: CPU: 1 PID: 211 at arch/x86/kvm/mmu/mmu.c:7021 kvm_mmu_zap_all_fast+0x1c5/0x1e0"),
    ("bug.log", "BUG", "BUG: kernel NULL pointer dereference, address: 0000000000000028"),
    ("oops.log", "Oops", "Oops: general protection fault, probably for non-canonical address "
     "0xdead000000000122: 0000 [#1] SMP"),
    ("kasan.log", "KASAN", "BUG: KASAN: slab-use-after-free in kvm_gmem_release+0x2a1/0x2f0"),
    ("lockdep.log", "lockdep", "WARNING: possible circular locking dependency detected"),
    ("rcu-usage.log", "lockdep", "WARNING: suspicious RCU usage"),
    ("rcu-stall.log", "RCU stall", "rcu: INFO: rcu_preempt self-detected stall on CPU"),
    ("soft-lockup.log", "soft lockup",
     "watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [python3:312]"),
    ("hard-lockup.log", "hard lockup", "Watchdog detected hard LOCKUP on cpu 1"),
])
def test_each_report_kind_is_found(log, kind, first_line):
    findings = health.scan((LOGS / log).read_text(), ("tests/x.py::test_y",))
    assert findings, log
    assert (findings[0].kind, findings[0].line) == (kind, first_line)
    assert str(findings[0]).startswith(f"{kind} during tests/x.py::test_y: ")


def test_oops_after_bug_is_reported_too():
    """A NULL dereference logs BUG: then Oops:; both are findings, BUG first."""
    kinds = [f.kind for f in health.scan((LOGS / "bug.log").read_text())]
    assert kinds == ["BUG", "Oops"]


def test_clean_console_has_no_findings():
    """A boot console with test output mixed in: only timestamped kernel lines are judged."""
    assert health.scan((LOGS / "clean.log").read_text(), console=True) == []
    assert [f.kind for f in health.scan((LOGS / "warning.log").read_text(), console=True)] \
        == ["WARNING"]


def test_a_report_after_a_tests_name_on_the_console_is_found():
    """pytest prints a test's name without a newline: the kernel's report, logged while the
    test runs, ends that console line; test output that looks like a timestamp is not one."""
    console = ("tests/test_x.py::test_warn [   13.720197] WARNING: drivers/misc/lkdtm/bugs.c:164"
               " at lkdtm_WARNING+0x8/0xb, CPU#1: python/43\n"
               "tests/test_x.py::test_y[1.5-WARNING: not the kernel's] PASSED\n")
    found = health.scan(console, console=True)
    assert [(f.kind, f.line[:24]) for f in found] == [("WARNING", "WARNING: drivers/misc/lk")]


def test_kmsg_record_prefix_is_stripped():
    assert health.scan("4,1234,5678901,-;WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1")[0].line \
        == "WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1"


@pytest.mark.parametrize("line", [
    "kvm: unknown parameter 'gmem_in_place_convertion' ignored",
    "Booting kernel: `maybe' invalid for parameter `kvm.gmem_in_place_conversion'",
    "Booting kernel: Unknown parameter `kvm.nope'",
    'Unknown kernel command line parameters "gmem_in_place=1", will be passed to user space.'])
def test_a_parameter_the_kernel_did_not_take_is_a_finding(line):
    """What the kernel prints of a command-line parameter it ignored or refused fails the run:
    the boot did not test what it was asked to."""
    assert [f.kind for f in health.scan(f"[    0.390000] {line}\n", console=True)] \
        == ["parameter"]
