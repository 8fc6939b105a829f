"""A guest test that makes the kernel log a real WARN (lkdtm's provoke-crash WARNING, from
CONFIG_LKDTM in kconfigs/base.config). Run only by tests/test_vm_runner.py, to check that kernel
health fails a run whose tests all passed."""

from pathlib import Path

PROVOKE = Path("/sys/kernel/debug/provoke-crash/DIRECT")


def test_provoke_warning():
    PROVOKE.write_text("WARNING\n")
