"""Guest tests around one that dies of SIGBUS (a read past the end of a mapped file, as a host
access the kernel wrongly refuses would die). Run only by tests/test_vm_runner.py, to check that
the crash is one failed test, named with the signal and its line, and that the rest still run."""

import mmap
import os
import tempfile


def test_before_the_crash():
    assert os.getpid() > 1


def test_provoke_sigbus():
    with tempfile.TemporaryFile() as f:
        f.truncate(2 * 4096)
        m = mmap.mmap(f.fileno(), 2 * 4096)
        f.truncate(4096)  # the second page no longer has the file behind it
        m[4096]  # SIGBUS


def test_after_the_crash():
    assert os.getpid() > 1
