"""A guest test that runs the guest out of memory (each chunk written, so it is really
allocated). Run only by tests/test_vm_runner.py, with a small guest, to check that an OOM kill
fails the run clearly."""

import ctypes

MCL_CURRENT = 1


def test_provoke_oom():
    # Lock this process's code in memory first. Otherwise reclaim evicts it, the next
    # instruction fetch re-reads it over 9p with GFP_NOFS allocations, the OOM killer does not
    # run for those, and the guest stalls ("page allocation stall") instead of killing us.
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mlockall(MCL_CURRENT) == 0, f"mlockall: errno {ctypes.get_errno()}"
    chunks = []
    while True:
        chunks.append(b"\x01" * (32 << 20))
