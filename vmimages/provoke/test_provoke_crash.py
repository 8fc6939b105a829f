"""A guest test that crashes the guest kernel (sysrq 'c': a NULL dereference, then panic).
Run only by tests/test_vm_runner.py, to check that a dead guest fails the run clearly."""

from pathlib import Path


def test_provoke_crash():
    Path("/proc/sysrq-trigger").write_text("c\n")
