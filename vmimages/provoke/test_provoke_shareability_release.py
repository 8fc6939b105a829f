"""What closing a guest_memfd gives back to the kernel: a reproducer kept out of the suite.

On kpatches/7.2 (applied form) this test oopses the guest kernel: once sixteen files whose
shareability records were split into an entry per page are closed, the RCU callback that frees
the records' maple tree nodes dereferences NULL in mte_dead_walk() (found 2026-12-02 by the
mutation run's new test; docs/coverage.md). It stays here, run by hand (`gmemtest vm run
--kernel BUILD -- -p no:xdist vmimages/provoke/` and this file's name), until the series is
fixed, when it goes back into tests/."""

import time

from gmemtest.testing import PAGE


def unreclaimable_slab_kib() -> int:
    """SUnreclaim of /proc/meminfo: the kernel's slab memory that only a free gives back."""
    for line in open("/proc/meminfo"):
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    raise AssertionError("no SUnreclaim in /proc/meminfo")


def test_closing_a_guest_memfd_frees_its_record_of_shareability(gmem_route):
    """Converting every other page of a file to shared splits guest_memfd's record of which
    pages are shared into an entry per page; closing the file gives that memory back. Sixteen
    files of 16384 pages, each split so: the kernel's unreclaimable slab grows while they are
    open (the control: the records took memory) and, once they are closed and RCU has freed
    the nodes, comes back to within a quarter of that growth."""
    vm = gmem_route.vm
    pages = 16384
    before = unreclaimable_slab_kib()
    files = [vm.create_guest_memfd(pages * PAGE) for _ in range(16)]
    for gmem in files:
        for index in range(0, pages, 2):
            gmem.set_attributes(index * PAGE, PAGE, 0)
    grown = unreclaimable_slab_kib() - before
    assert grown >= 1024, f"the split records took only {grown} KiB: the control failed"
    for gmem in files:
        gmem.close()
    deadline = time.monotonic() + 30
    left = unreclaimable_slab_kib() - before
    while left > grown // 4 and time.monotonic() < deadline:
        time.sleep(0.5)  # the nodes go after an RCU grace period
        left = unreclaimable_slab_kib() - before
    assert left <= grown // 4, \
        f"{left} of the {grown} KiB the records took stayed after every file was closed"
