"""Allocation failures forced into conversions and guest_memfd faults (seed 'Advantage 4': a
failed conversion restores the state). failslab and fail_page_alloc are aimed at the test's own
thread only (task-filter + make-it-fail), around exactly the call under test."""

from __future__ import annotations

import os

import pytest

from gmemtest import Agent, KvmError
from gmemtest.errors import ConversionError
from gmemtest.kvm import uapi
from gmemtest.testing import GPA, PAGE
from gmemtest.testing.faultinject import Injector

PAGES = 16
# Allocations failed per round once the budget is spent: more than one, so that an allocation
# retried with other flags (the maple tree tries GFP_NOWAIT, then GFP_KERNEL) fails too.
FAIL_TIMES = 4
# failslab's space budget per round: byte steps reach each small allocation in turn, then
# doubling steps get past big objects (xarray and maple tree nodes are over 500 bytes).
BUDGETS = [8 * i for i in range(16)] + [128 << k for k in range(10)]


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# KVM's per-VM attributes live in an xarray whose leaf nodes cover 64 gfns: a range that runs
# into a leaf with no attribute yet makes the VM ioctl allocate one.
XA_LEAF = 64


@pytest.mark.needs("failslab")
@pytest.mark.parametrize("private", [True, False], ids=["to-private", "to-shared"])
def test_failed_conversions_change_nothing(route, tally, private):
    """Contract 'Errors': ENOMEM with error_offset = start, and on any failure the attributes
    are unchanged, in both directions, on a range of several runs in different states with
    the failure in a later run. Of 128 pages in the other state, [56, 72) is converted while
    58, 59 and 62 are in the requested state already: five runs, the last crossing into the
    second xarray leaf (where the VM ioctl must allocate) and, for guest_memfd, a maple tree
    store that allocates for the whole range. The slab allocations of the conversion are failed
    from each point in turn (failslab's space budget grows each round, see BUDGETS) until a
    round injects nothing. After each ENOMEM every page of the range and its neighbours is as
    it was: the guest reads each page's own byte, and the host's view gives it too, except that
    a private page of the gmem route is SIGBUS; a call that absorbed its injected failures
    (allocations with a fallback) must have converted the whole range (on the vm-attributes
    route a page then reads the backing of its new state, zero where nobody wrote it)."""
    agent = Agent(route.vm)
    pages = 2 * XA_LEAF
    mem = route.memory(1, GPA, pages * PAGE, private=not private)
    first, count = XA_LEAF - 8, 16
    mixed = {first + 2, first + 3, first + 6}  # in the requested state before each conversion
    window = range(first - 2, first + count + 2)
    if private or route.name != "gmem":  # the host can reach the pages' shared backing
        for p in window:
            mem.view.write(p * PAGE, bytes([p]))
    # where the guest's writes went while the pages were private: guest_memfd's backing
    guest_memfd_written = {p for p in window if (p in mixed) == private}

    def make_mixed() -> None:
        for p in mixed:
            route.convert(mem, p * PAGE, PAGE, private=private)
        for p in window:
            assert agent.write(GPA + p * PAGE, p) is None

    make_mixed()
    baseline = fds()
    counts = {"rounds": 0, "injected_faults": 0, "enomem": 0, "absorbed": 0}

    def check(converted: bool, why: object) -> None:
        for p in window:
            requested = p in mixed or (converted and first <= p < first + count)
            is_private = private if requested else not private
            blocked = is_private and route.name == "gmem"
            assert mem.view.probe(p * PAGE) == ("SIGBUS" if blocked else "ok"), \
                f"page {p} ({'private' if is_private else 'shared'}): {why}"
            if not blocked:
                assert mem.view.read(p * PAGE) == bytes([p]), f"page {p}: {why}"
            unwritten = route.name == "vm-attributes" and is_private and \
                p not in guest_memfd_written
            assert agent.read(GPA + p * PAGE) == (0 if unwritten else p), f"page {p}: {why}"

    for space in BUDGETS:
        counts["rounds"] += 1
        with Injector("failslab", space=space, times=FAIL_TIMES) as inj:
            try:
                route.convert(mem, first * PAGE, count * PAGE, private=private)
                error = None
            except KvmError as e:
                error = e
        counts["injected_faults"] += inj.injected
        if error is not None:
            assert inj.injected >= 1, f"{error} without an injected failure"
            assert error.errno_name == "ENOMEM", error
            if route.name == "gmem":  # the VM ioctl's struct has no error_offset
                assert isinstance(error, ConversionError)
                assert error.error_offset == mem.slot.gmem_offset + first * PAGE, error
            counts["enomem"] += 1
            check(False, error)
            continue
        check(True, f"success after {inj.injected} injected failure(s)")
        if inj.injected == 0:
            break
        counts["absorbed"] += 1
        route.convert(mem, first * PAGE, count * PAGE, private=not private)
        make_mixed()
    else:
        pytest.fail(f"still injecting with a {BUDGETS[-1]}-byte budget: {counts}")
    assert fds() == baseline
    tally(**counts, lost=0)
    if route.name == "vm-attributes" and not private:
        # Upstream's VM ioctl converts to shared by erasing array entries: it allocates
        # nothing, so there is nothing to fail (the first round injects nothing).
        assert counts == {"rounds": 1, "injected_faults": 0, "enomem": 0, "absorbed": 0}
    else:
        assert counts["enomem"] >= 1, "no injected failure made the conversion fail"


@pytest.mark.needs("fail_page_alloc")
def test_failed_guest_memfd_fault_is_retried(gmem_route, tally):
    """A guest access to a never-allocated private page while page allocation fails: KVM_RUN
    fails with ENOMEM and maps nothing; once allocation works again the same access completes
    and reads zero, and the kernel stays healthy (checked for every test)."""
    agent = Agent(gmem_route.vm)
    mem = gmem_route.memory(1, GPA, PAGES * PAGE, private=True)
    with pytest.raises(KvmError) as e:
        with Injector("fail_page_alloc", times=1) as inj:
            agent.read(GPA + 3 * PAGE)
    assert inj.injected == 1
    assert e.value.call == "KVM_RUN"
    assert e.value.errno_name == "ENOMEM"
    assert agent.resume() == 0  # the same read, completed
    assert agent.write(GPA + 3 * PAGE, 0x5A) is None
    assert agent.read(GPA + 3 * PAGE) == 0x5A
    gmem_route.to_shared(mem, 3 * PAGE, PAGE)
    assert mem.view.read(3 * PAGE) == b"\x5a"
    tally(injected_faults=inj.injected, lost=0)


@pytest.mark.needs("fail_page_alloc", "cachestat")
def test_failed_fallocate_allocates_nothing(gmem_route, tally):
    """fallocate of a shared range while page allocation fails: ENOMEM, and the file's page
    cache holds none of the range's pages (cachestat, which counts them without faulting any
    in; a read would allocate). The control: the same fallocate afterwards puts every page in
    the page cache, the pages read zero, and a conversion of the range works (nothing
    half-made is left)."""
    mem = gmem_route.memory(1, GPA, PAGES * PAGE, private=False)
    assert mem.gmem.cached() == 0
    with Injector("fail_page_alloc", times=1) as inj:
        with pytest.raises(KvmError) as e:
            mem.gmem.allocate(0, PAGES * PAGE)
    assert e.value.errno_name == "ENOMEM", e.value
    assert inj.injected == 1, e.value
    assert mem.gmem.cached() == 0, "a failed fallocate left pages allocated"
    mem.gmem.allocate(0, PAGES * PAGE)
    assert mem.gmem.cached() == PAGES, "fallocate did not allocate (no control)"
    assert mem.view.read(PAGE, 8) == bytes(8)
    gmem_route.to_private(mem)
    gmem_route.to_shared(mem)
    assert mem.view.read(PAGE, 8) == bytes(8)
    tally(injected_faults=inj.injected, lost=0)


@pytest.mark.needs("fail_page_alloc:within", "cachestat")
def test_failed_host_fault_of_shared_page(gmem_route, tally):
    """A host access through get_user_pages (a /proc/self/mem read, as a debugger's) to a
    never-allocated shared page of a guest_memfd mapping while page allocation fails: the
    fault gives up (the read is refused), allocates nothing (cachestat) and leaves the
    invalidate_lock free (a conversion of the page afterwards takes it for write and works).
    Once allocation works the same read allocates the page, which reads zero. The one
    failure is aimed at guest_memfd's fault handler: the read's own buffer comes before it
    (a kmalloc whose slab refill falls back to a lower order when a higher one fails)."""
    mem = gmem_route.memory(1, GPA, PAGES * PAGE, private=False)
    assert mem.view.read(0) == b"\0"
    assert mem.gmem.cached() == 1
    with Injector("fail_page_alloc", times=1, within="kvm_gmem_fault_user_mapping") as inj:
        refused = mem.view.peek(3 * PAGE)
    assert inj.injected == 1, (inj.injected, refused)
    assert refused is None, (inj.injected, refused)
    assert mem.gmem.cached() == 1, "the failed fault left its page allocated"
    gmem_route.to_private(mem, 3 * PAGE, PAGE)  # would hang on a leaked invalidate_lock
    gmem_route.to_shared(mem, 3 * PAGE, PAGE)
    assert mem.view.peek(3 * PAGE) == b"\0"
    assert mem.gmem.cached() == 2
    tally(injected_faults=inj.injected, lost=0)


@pytest.mark.needs("failslab", "gmem_flags:INIT_SHARED@KVM_X86_SW_PROTECTED_VM")
def test_failed_guest_memfd_creation_leaks_nothing(sw_vm, tally):
    """KVM_CREATE_GUEST_MEMFD with INIT_SHARED while slab allocations fail, from each point of
    the call in turn (the file's state, its inode, the maple tree node that records the
    whole file shared, the file itself): each failure is ENOMEM with no new fd, and the
    first call that gets through gives a file shared in full (a write through its mapping
    reads back) and nothing else."""
    size = PAGES * PAGE
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    baseline = fds()
    counts = {"rounds": 0, "injected_faults": 0, "enomem": 0}
    # 16-byte steps: the call's allocations are small and many, and a coarser budget would
    # step over one (the maple tree node sits between the inode and the file).
    for space in range(0, 1 << 14, 16):
        counts["rounds"] += 1
        with Injector("failslab", space=space, times=FAIL_TIMES) as inj:
            try:
                gmem = sw_vm.create_guest_memfd(size, flags)
                error = None
            except KvmError as e:
                error = e
        counts["injected_faults"] += inj.injected
        if error is None:
            break
        assert inj.injected >= 1, f"{error} without an injected failure"
        assert error.errno_name == "ENOMEM", error
        assert fds() == baseline, f"{error} left a file descriptor behind"
        counts["enomem"] += 1
    else:
        pytest.fail(f"still injecting with a 16K budget: {counts}")
    with gmem, gmem.mmap(0, size) as view:
        view.write(size - PAGE, b"\x7e")
        assert view.read(size - PAGE) == b"\x7e"
        assert view.read(0) == b"\0"
    assert fds() == baseline
    assert counts["enomem"] >= 3, f"fewer failure points than the call has: {counts}"
    tally(**counts, lost=0)
