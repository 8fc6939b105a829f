"""Shared/private conversion on a KVM_X86_SW_PROTECTED_VM, through both paths.

`gmem`: KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (the in-place series); `vm-attributes`:
KVM_SET_MEMORY_ATTRIBUTES on the VM (upstream). Each test names the point of
docs/uapi.md (the contract) or docs/seed.md it checks.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time

import pytest

from gmemtest import Agent, ConversionError, KvmError, MemoryFault, Mmio
from gmemtest.kvm import libc, memory, uapi
from gmemtest.kvm import revision as rev
from gmemtest.kvm.ioctl import kvm_ioctl
from gmemtest.testing import GPA, PAGE, PRIVATE
from gmemtest.testing.plugin import target as kvm_target
from gmemtest.testing.routes import GmemRoute

MMAP_SHARED = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED

def gmem_slot(vm, pages=4, *, private=False):
    """A gmem-path memslot at GPA: (its guest_memfd, the host's mmap of it)."""
    mem = GmemRoute(vm).memory(1, GPA, pages * PAGE, private=private)
    return mem.gmem, mem.view


# --- gmem path ------------------------------------------------------------------------------

@pytest.mark.needs("route:gmem")
def test_private_page_sigbus_for_host_reads_and_writes(sw_vm):
    """Contract: 'Conversion to private removes the pages from every host process's page
    tables; a later host read or write of a private page gets SIGBUS.' Neighbours stay
    accessible; the child processes that probe inherit the mapping made before conversion."""
    gmem, view = gmem_slot(sw_vm)
    with view:
        view.write(PAGE, b"x")
        assert view.probe(PAGE) == "ok"
        gmem.to_private(PAGE, PAGE)
        assert view.probe(PAGE) == "SIGBUS"
        assert view.probe(PAGE, write=True) == "SIGBUS"
        assert view.probe(0) == "ok"
        assert view.probe(2 * PAGE) == "ok"


@pytest.mark.needs("route:gmem")
def test_contents_survive_conversions(sw_vm):
    """Contract: 'For SW_PROTECTED VMs memory contents survive conversions in both
    directions.'"""
    gmem, view = gmem_slot(sw_vm)
    with view:
        view.write(0, b"kept")
        gmem.to_private(0, PAGE)
        gmem.to_shared(0, PAGE)
        assert view.read(0, 4) == b"kept"


@pytest.mark.needs("route:gmem")
def test_one_page_serves_guest_and_host(sw_vm):
    """Seed 'double allocation': the guest writes a private page, it is converted to shared,
    and the host reads the guest's data through the guest_memfd mmap: one page, not two."""
    agent = Agent(sw_vm)
    gmem, view = gmem_slot(sw_vm)
    with view:
        gmem.to_private()
        assert agent.write(GPA + PAGE + 8, 0x5A) is None
        gmem.to_shared(PAGE, PAGE)
        assert view.read(PAGE + 8) == b"\x5a"
        view.write(PAGE + 9, b"\x6b")
        assert agent.read(GPA + PAGE + 9) == 0x6B


@pytest.mark.needs("route:gmem")
def test_guest_requested_conversion(sw_vm):
    """Contract: 'guest-requested conversions arrive as KVM_HC_MAP_GPA_RANGE hypercall exits,
    and the VMM converts with the gmem ioctl.' The next access lands on the same page."""
    sw_vm.enable_cap(uapi.KVM_CAP_EXIT_HYPERCALL, 1 << uapi.KVM_HC_MAP_GPA_RANGE)
    agent = Agent(sw_vm)
    gmem, view = gmem_slot(sw_vm)
    with view:
        view.write(0, b"\x11")
        exit = agent.map_gpa_range(GPA, 1, private=True)
        assert exit.nr == uapi.KVM_HC_MAP_GPA_RANGE
        assert exit.args[:2] == (GPA, 1)
        gmem.to_private(0, PAGE)
        assert agent.resume(hypercall_ret=0) == 0
        assert view.probe(0) == "SIGBUS"
        assert agent.read(GPA) == 0x11


@pytest.mark.needs("route:gmem")
def test_access_after_memslot_deletion_is_mmio(sw_vm):
    """Contract: 'A gfn with no memslot ... counts as shared, so a guest access after its
    memslot was deleted exits with KVM_EXIT_MMIO, not KVM_EXIT_MEMORY_FAULT.'"""
    agent = Agent(sw_vm)
    gmem, view = gmem_slot(sw_vm)
    with view:
        gmem.to_private()
        sw_vm.memslots[1].delete()
        exit = agent.read(GPA + 16)
        assert isinstance(exit, Mmio)
        assert exit.gpa == GPA + 16


@pytest.mark.needs("route:gmem")
def test_access_after_its_guest_memfd_is_closed_is_memory_fault(sw_vm):
    """Closing the last fd of a guest_memfd unbinds it from its memslot (the slot stays): a
    gfn there has no page and no record of its state left, so it counts as shared, and the
    guest's access to a page that was private exits with KVM_EXIT_MEMORY_FAULT (nothing to
    fault in). The shared page read before the close is the control that the slot served."""
    agent = Agent(sw_vm)
    # mmap()able, so that every revision serves the memslot from guest_memfd alone (v8 serves
    # a file without the flag's shared gfns from userspace_addr); never mapped, so that only
    # the fd holds the file
    gmem = sw_vm.create_guest_memfd(2 * PAGE, uapi.GUEST_MEMFD_FLAG_MMAP)
    sw_vm.add_memslot(1, GPA, 2 * PAGE, gmem=gmem)
    gmem.set_attributes(PAGE, PAGE, 0)
    assert agent.read(GPA + PAGE + 8) == 0
    gmem.close()
    exit = agent.read(GPA + 8)  # the page was private
    assert isinstance(exit, MemoryFault), exit
    assert (exit.gpa, exit.size, exit.private) == (GPA, PAGE, False)


@pytest.mark.needs("KVM_CAP_BINARY_STATS_FD")
@pytest.mark.needs("route:gmem")
def test_closing_a_guest_memfd_drops_every_mapping_the_guest_had(sw_vm):
    """Closing the last fd of a guest_memfd under a live memslot frees its pages, so KVM must
    drop its mappings of them in both states: the guest wrote (and so mapped) two private and
    two shared pages; after the close KVM maps none of the four, and each later access exits
    with KVM_EXIT_MEMORY_FAULT (nothing to fault in), none reads a freed page."""
    agent = Agent(sw_vm)
    gmem = sw_vm.create_guest_memfd(4 * PAGE, uapi.GUEST_MEMFD_FLAG_MMAP)  # never mapped
    sw_vm.add_memslot(1, GPA, 4 * PAGE, gmem=gmem)
    gmem.set_attributes(2 * PAGE, 2 * PAGE, 0)  # pages 0 and 1 private, 2 and 3 shared
    stats = sw_vm.stats()
    for p in range(4):
        assert agent.write(GPA + p * PAGE + 8, 0x40 + p) is None
    assert [agent.read(GPA + p * PAGE + 8) for p in range(4)] == [0x40, 0x41, 0x42, 0x43]
    mapped = stats["pages_4k"]  # the four, and the agent's own pages
    gmem.close()
    assert stats["pages_4k"] == mapped - 4, "closing the file left KVM mappings of its pages"
    # one vCPU a page: an access that exits stays pending on its vCPU
    for p, vcpu in enumerate([agent, *(agent.sibling() for _ in range(3))]):
        exit = vcpu.read(GPA + p * PAGE + 8)
        assert isinstance(exit, MemoryFault), f"page {p}: {exit}"


@pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD")
@pytest.mark.parametrize("bit", [0, 1, 31, 63])
def test_pre_fault_memory_flags_are_einval(sw_vm, gmem_route, bit):
    """KVM_PRE_FAULT_MEMORY takes no flags yet: any bit set is EINVAL and maps nothing; the
    same call without the flag maps the range (the control)."""
    agent = Agent(sw_vm)
    gmem_route.memory(1, GPA, 4 * PAGE, private=True)
    stats = sw_vm.stats()
    before = stats["pages_4k"]
    with pytest.raises(KvmError) as e:
        agent.vcpu.pre_fault_memory(GPA, 4 * PAGE, flags=1 << bit)
    assert (e.value.call, e.value.errno_name) == ("KVM_PRE_FAULT_MEMORY", "EINVAL")
    assert e.value.arguments["flags"] == 1 << bit
    assert stats["pages_4k"] == before, "a refused pre-fault mapped pages"
    assert agent.vcpu.pre_fault_memory(GPA, 4 * PAGE) == (GPA + 4 * PAGE, 0)
    assert stats["pages_4k"] == before + 4


@pytest.mark.needs("route:gmem")
def test_gfn_without_guest_memfd_is_shared(sw_vm):
    """Contract 'Fault routing with in-place conversion': 'A gfn with no memslot, or in a
    memslot without guest_memfd, counts as shared': the guest's accesses to a plain memslot
    land in its userspace memory, with no KVM_EXIT_MEMORY_FAULT (the vm-attributes path
    answers one for a private gfn there: test_private_gfn_without_guest_memfd_is_memory_fault)."""
    agent = Agent(sw_vm)
    slot = sw_vm.add_memslot(1, GPA, 4 * PAGE)
    slot.backing.write(PAGE, b"\x19")
    assert agent.read(GPA + PAGE) == 0x19
    assert agent.write(GPA + 2 * PAGE, 0x2A) is None
    assert slot.backing.read(2 * PAGE) == b"\x2a"


@pytest.mark.needs("route:gmem")
def test_noop_conversion_succeeds(sw_vm):
    """Contract: 'A range that already has the requested attribute returns 0 and does
    nothing.'"""
    gmem, view = gmem_slot(sw_vm)
    with view:
        view.write(0, b"y")
        assert gmem.to_shared() == 0
        assert view.read(0) == b"y"


@pytest.mark.needs("gup_test")
@pytest.mark.needs("route:gmem")
def test_error_offset_passed_in_is_the_kernels_to_write(sw_vm):
    """error_offset is the kernel's out-field: a value passed in does not change what a
    conversion does (it succeeds), a refusal before any conversion (EINVAL) leaves it as it
    was, and a conversion that stops (EAGAIN at a pinned page) writes its own offset over
    it."""
    from gmemtest.testing import gup

    gmem, view = gmem_slot(sw_vm)
    with view:
        gmem.set_attributes(0, PAGE, PRIVATE, error_offset=0xDEAD000)
        assert view.probe(0) == "SIGBUS"
        assert view.probe(PAGE) == "ok"
        with pytest.raises(ConversionError) as e:
            gmem.set_attributes(PAGE, PAGE, PRIVATE, flags=1, error_offset=0xDEAD000)
        assert (e.value.errno_name, e.value.error_offset) == ("EINVAL", 0xDEAD000)
        with gup.long_term_pin(view.addr + 2 * PAGE, PAGE):
            with pytest.raises(ConversionError) as e:
                gmem.set_attributes(PAGE, 3 * PAGE, PRIVATE, error_offset=0xDEAD000)
        assert (e.value.errno_name, e.value.error_offset) == ("EAGAIN", 2 * PAGE)


@pytest.mark.parametrize("word", range(11), ids=lambda w: f"reserved[{w}]")
@pytest.mark.needs("route:gmem")
def test_each_reserved_word_is_einval(sw_vm, word):
    """Contract: EINVAL for 'any reserved != 0', each of the 11 words on its own; the pages
    stay shared."""
    gmem, view = gmem_slot(sw_vm)
    with view:
        reserved = [0] * 11
        reserved[word] = 1 << (word * 5)
        with pytest.raises(ConversionError) as e:
            gmem.set_attributes(0, PAGE, PRIVATE, reserved=reserved)
        assert e.value.errno_name == "EINVAL"
        assert all(view.probe(p * PAGE) == "ok" for p in range(4))


@pytest.mark.parametrize("offset, size, attributes, flags, why", [
    (0, PAGE, PRIVATE, 1, "flags != 0"),
    (0, PAGE, 1, 0, "attribute other than PRIVATE"),
    (0, 0, PRIVATE, 0, "size 0"),
    (PAGE, 2**64 - PAGE, PRIVATE, 0, "offset + size overflows"),
    (100, PAGE, PRIVATE, 0, "offset not page aligned"),
    (0, 100, PRIVATE, 0, "size not page aligned"),
    (3 * PAGE, 2 * PAGE, PRIVATE, 0, "range beyond the file"),
])
@pytest.mark.needs("route:gmem")
def test_invalid_conversion_is_einval_and_changes_nothing(sw_vm, offset, size,
                                                          attributes, flags, why):
    """Contract: every EINVAL case; 'On any failure the attributes are unchanged'."""
    gmem, view = gmem_slot(sw_vm)
    with view:
        with pytest.raises(ConversionError) as e:
            gmem.set_attributes(offset, size, attributes, flags=flags)
        assert e.value.errno_name == "EINVAL", why
        assert e.value.call == "KVM_SET_MEMORY_ATTRIBUTES2"
        assert all(view.probe(p * PAGE) == "ok" for p in range(4))


@pytest.fixture
def unreadable():
    """A user address the kernel cannot read: a PROT_NONE page."""
    with memory.Mapping(memory.mmap(PAGE, libc.PROT_NONE,
                                    libc.MAP_PRIVATE | libc.MAP_ANONYMOUS), PAGE) as page:
        yield page.addr


@pytest.mark.needs("route:gmem")
def test_bad_user_pointer_is_efault_and_changes_nothing(sw_vm, unreadable):
    """Contract: 'EFAULT for a bad user pointer'; the pages stay shared."""
    gmem, view = gmem_slot(sw_vm)
    with view:
        with pytest.raises(ConversionError) as e:
            kvm_ioctl(gmem.fd, "KVM_SET_MEMORY_ATTRIBUTES2", unreadable, target=gmem,
                      error=ConversionError)
        assert e.value.errno_name == "EFAULT"
        assert all(view.probe(p * PAGE) == "ok" for p in range(4))


@pytest.mark.needs("route:gmem")
def test_default_vm_conversion_is_einval(kvm):
    """Contract: EINVAL for 'a VM without private memory (default VM)'."""
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        gmem = vm.create_guest_memfd(4 * PAGE, MMAP_SHARED)
        with pytest.raises(ConversionError) as e:
            gmem.to_private(0, PAGE)
        assert e.value.errno_name == "EINVAL"


@pytest.mark.needs("route:gmem")
def test_vm_ioctl_cannot_make_memory_private(sw_vm, vm_attributes_config):
    """Contract: 'When on: KVM_CAP_MEMORY_ATTRIBUTES reports 0 and the VM ioctl cannot set
    PRIVATE'. How it refuses depends on the kernel's config (contract 'Checked against the
    real v8'): EINVAL where per-VM attributes are built in, ENOTTY where the VM ioctl does not
    exist (CONFIG_KVM_VM_MEMORY_ATTRIBUTES=n)."""
    assert sw_vm.check_extension(uapi.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    with pytest.raises(KvmError) as e:
        sw_vm.set_memory_attributes(GPA, PAGE, PRIVATE)
    assert e.value.errno_name == ("EINVAL" if vm_attributes_config else "ENOTTY")


@pytest.mark.needs("route:gmem")
def test_conversion_cap_follows_private_memory(kvm, sw_vm, kernel_revision):
    """Contract: KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 'Returns KVM_MEMORY_ATTRIBUTE_PRIVATE
    when the ioctl is usable (on /dev/kvm, or on a VM with private memory), else 0'. Its
    number is the revision's (v8: 250; applied: 252, where 250 and 251 belong to other caps):
    it answers (the revision was read from the kernel's headers: that it is the revision's
    number is true by construction, unless --revision forces another), and the other
    revision's does not."""
    assert kvm.check_extension(kernel_revision.cap) == PRIVATE
    assert sw_vm.check_extension(kernel_revision.cap) == PRIVATE
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        assert vm.check_extension(kernel_revision.cap) == 0
    for other in rev.REVISIONS.values():
        if other is not kernel_revision:
            assert kvm.check_extension(other.cap) == 0, f"{other.name}'s number answers"


@pytest.mark.needs("switch:off")
def test_gmem_ioctl_is_enotty_when_switched_off(kvm, sw_vm):
    """Contract: 'When off: the gmem ioctl fails with ENOTTY', and the conversion cap (the
    kernel's own number) reports 0 (the ioctl is not usable)."""
    cap = kvm_target().cap
    assert cap is not None
    assert kvm.check_extension(cap) == 0
    assert sw_vm.check_extension(cap) == 0
    gmem = sw_vm.create_guest_memfd(4 * PAGE)
    with pytest.raises(ConversionError) as e:
        gmem.to_private(0, PAGE)
    assert e.value.errno_name == "ENOTTY"


# --- vm-attributes path ---------------------------------------------------------------------

@pytest.mark.needs("route:vm-attributes")
def test_private_and_shared_backings_are_separate(sw_vm):
    """Upstream routing: a private gfn is served by guest_memfd and a shared gfn by
    userspace_addr, so a guest write to a private page is invisible in userspace_addr and
    the shared page keeps its own contents."""
    agent = Agent(sw_vm)
    gmem = sw_vm.create_guest_memfd(4 * PAGE)
    slot = sw_vm.add_memslot(1, GPA, 4 * PAGE, gmem=gmem)
    shared = slot.backing
    shared.write(0, b"\x22")
    sw_vm.set_memory_attributes(GPA, PAGE, PRIVATE)
    assert agent.write(GPA, 0x33) is None
    assert shared.read(0) == b"\x22"
    assert agent.read(GPA) == 0x33
    sw_vm.set_memory_attributes(GPA, PAGE, 0)
    assert agent.read(GPA) == 0x22


@pytest.mark.needs("route:vm-attributes")
def test_private_gfn_without_guest_memfd_is_memory_fault(sw_vm):
    """Upstream: KVM_EXIT_MEMORY_FAULT (flags PRIVATE, gpa, size) for a private gfn in a
    memslot without guest_memfd; KVM_RUN returns -1/EFAULT with it."""
    agent = Agent(sw_vm)
    sw_vm.add_memslot(1, GPA, 4 * PAGE)
    sw_vm.set_memory_attributes(GPA + PAGE, PAGE, PRIVATE)
    exit = agent.read(GPA + PAGE + 1)
    assert isinstance(exit, MemoryFault)
    assert (exit.gpa, exit.size, exit.private) == (GPA + PAGE, PAGE, True)


@pytest.mark.needs("gup_test")
@pytest.mark.needs("route:gmem")
def test_elevated_refcount_is_eagain_at_the_pinned_page(sw_vm):
    """Series selftest elevated_refcount; contract: 'EAGAIN on conversion to private when a
    page in range holds an extra reference (e.g. a long-term GUP pin), with error_offset = the
    byte offset of the first such page'. Unpinned pages convert; after unpinning the whole
    range converts and contents are kept."""
    from gmemtest.testing import gup

    gmem, view = gmem_slot(sw_vm, pages=4)
    with view:
        for page in range(4):
            view.write(page * PAGE, bytes([0x40 + page]))
        with gup.long_term_pin(view.addr + 2 * PAGE, PAGE):
            with pytest.raises(ConversionError) as e:
                gmem.to_private()
            assert e.value.errno_name == "EAGAIN"
            assert e.value.error_offset == 2 * PAGE
            assert all(view.probe(p * PAGE) == "ok" for p in range(4))
            gmem.to_private(0, 2 * PAGE)
            assert view.probe(0) == "SIGBUS"
            assert view.probe(2 * PAGE) == "ok"
        gmem.to_private()
        assert view.probe(3 * PAGE) == "SIGBUS"
        gmem.to_shared()
        assert [view.read(p * PAGE) for p in range(4)] == [b"\x40", b"\x41", b"\x42", b"\x43"]


@pytest.mark.needs("gup_test")
@pytest.mark.needs("route:gmem")
def test_pin_in_a_later_run_fails_the_whole_mixed_range(sw_vm):
    """Contract: EAGAIN 'with error_offset = the byte offset of the first such page', and 'On
    any failure the attributes are unchanged', on a range of several runs in different states
    with the pin in a later run: pages [0, 2) shared, [2, 4) private, [4, 6) shared with page 5
    pinned, [6, 8) private. A to-private conversion of all 8 fails at page 5 and leaves every
    page as it was, seen by the host (SIGBUS exactly on the private pages, each shared page's
    byte) and by the guest (each page's byte); once unpinned the same conversion goes through
    and the contents survive."""
    from gmemtest.testing import gup

    agent = Agent(sw_vm)
    gmem, view = gmem_slot(sw_vm, pages=8)
    private = {2, 3, 6, 7}
    with view:
        for page in range(8):
            view.write(page * PAGE, bytes([0x40 + page]))
        gmem.to_private(2 * PAGE, 2 * PAGE)
        gmem.to_private(6 * PAGE, 2 * PAGE)
        with gup.long_term_pin(view.addr + 5 * PAGE, PAGE):
            with pytest.raises(ConversionError) as e:
                gmem.to_private(0, 8 * PAGE)
            assert e.value.errno_name == "EAGAIN"
            assert e.value.error_offset == 5 * PAGE
            for page in range(8):
                want = "SIGBUS" if page in private else "ok"
                assert view.probe(page * PAGE) == want, f"page {page}"
                if page not in private:
                    assert view.read(page * PAGE) == bytes([0x40 + page])
                assert agent.read(GPA + page * PAGE) == 0x40 + page, f"page {page}"
        gmem.to_private(0, 8 * PAGE)
        assert all(view.probe(page * PAGE) == "SIGBUS" for page in range(8))
        gmem.to_shared()
        assert [view.read(p * PAGE) for p in range(8)] == [bytes([0x40 + p]) for p in range(8)]


@pytest.mark.needs("route:gmem")
def test_conversion_unmaps_every_process(sw_vm):
    """Series selftest forked_accesses; contract: 'Conversion to private removes the pages
    from every host process's page tables (not just the caller's)': a child that has the page
    mapped and read before the conversion gets SIGBUS on its next read."""
    gmem, view = gmem_slot(sw_vm)
    with view:
        view.write(0, b"a")
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            faulthandler.disable()
            try:
                view.read(0)  # the child's own PTE for the page
                os.write(ready_w, b"1")
                os.read(go_r, 1)
                view.read(0)
            finally:
                os._exit(0)
        os.read(ready_r, 1)
        gmem.to_private(0, PAGE)
        os.write(go_w, b"1")
        _, status = os.waitpid(pid, 0)
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGBUS


@pytest.mark.parametrize("gpa, size, attributes, flags, why", [
    (GPA, PAGE, PRIVATE, 1, "flags != 0"),
    (GPA, PAGE, 1, 0, "attribute other than PRIVATE"),
    (GPA, 0, PRIVATE, 0, "size 0"),
    (GPA + 100, PAGE, PRIVATE, 0, "address not page aligned"),
    (GPA, 100, PRIVATE, 0, "size not page aligned"),
    (2**64 - PAGE, 2 * PAGE, PRIVATE, 0, "address + size overflows"),
])
def test_invalid_vm_ioctl_is_einval_and_changes_nothing(sw_vm, vm_attributes_route, gpa, size,
                                                        attributes, flags, why):
    """The upstream ioctl's EINVAL cases; afterwards the guest still reads the shared
    backing, so nothing became private."""
    agent = Agent(sw_vm)
    mem = vm_attributes_route.memory(1, GPA, 4 * PAGE, private=False)
    mem.view.write(0, b"\x5c")
    with pytest.raises(ConversionError) as e:
        sw_vm.set_memory_attributes(gpa, size, attributes, flags)
    assert e.value.errno_name == "EINVAL", why
    assert agent.read(GPA) == 0x5C


@pytest.mark.needs("route:vm-attributes")
def test_vm_ioctl_bad_user_pointer_is_efault(sw_vm, unreadable):
    """Upstream KVM_SET_MEMORY_ATTRIBUTES reads its struct first: EFAULT for a bad pointer."""
    with pytest.raises(KvmError) as e:
        kvm_ioctl(sw_vm.fd, "KVM_SET_MEMORY_ATTRIBUTES", unreadable, target=sw_vm)
    assert e.value.errno_name == "EFAULT"


def test_private_access_after_memslot_deletion_is_memory_fault(sw_vm, vm_attributes_route):
    """Upstream private_mem_kvm_exits_test: the attribute lives in the VM, so a private gfn
    whose memslot was deleted still faults as private: KVM_EXIT_MEMORY_FAULT, not MMIO (the
    gmem path answers MMIO, test_access_after_memslot_deletion_is_mmio)."""
    agent = Agent(sw_vm)
    vm_attributes_route.memory(1, GPA, 4 * PAGE, private=True)
    sw_vm.memslots[1].delete()
    exit = agent.read(GPA + 8)
    assert isinstance(exit, MemoryFault)
    assert (exit.gpa, exit.size, exit.private) == (GPA, PAGE, True)


def unreclaimable_slab_kib() -> int:
    """SUnreclaim of /proc/meminfo: the kernel's slab memory that only a free gives back."""
    for line in open("/proc/meminfo"):
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    raise AssertionError("no SUnreclaim in /proc/meminfo")


def test_closing_a_guest_memfd_frees_its_record_of_shareability(gmem_route):
    """Converting every other page of a file to shared splits guest_memfd's record of which
    pages are shared into an entry per page (a maple tree of thousands of nodes); closing the
    file frees it. Sixteen files of 16384 pages, each split so: the kernel's unreclaimable slab
    grows while they are open (the control: the records took memory) and comes back to within
    a quarter of that growth once they are closed. Destroying such a tree in RCU mode oopsed
    kpatches/ before "Track shareability per page in the inode" took it out of RCU mode first
    (docs/coverage.md)."""
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
        time.sleep(0.5)  # slab pages of freed objects may go back later
        left = unreclaimable_slab_kib() - before
    assert left <= grown // 4, \
        f"{left} of the {grown} KiB the records took stayed after every file was closed"


def test_converting_pages_no_memslot_covers_leaves_the_next_memslot_served(gmem_route):
    """Contract 'Conversion': a conversion of file pages that no memslot binds needs no MMU
    invalidation. Here the memslot binds the file from page 4 on and pages [0, 4) are
    converted both ways, ending exactly where the memslot begins: no invalidation may be left
    open (the walk over the bindings must stop before the memslot's first page), so the
    guest's faults in the memslot are served at once, after conversions of the memslot's own
    pages too (an invalidation left open would make them retry forever), and closing the VM
    warns of nothing (kernel health is checked for every test)."""
    vm = gmem_route.vm
    agent = Agent(vm)
    gmem = vm.create_guest_memfd(8 * PAGE, MMAP_SHARED)
    with gmem.mmap() as view:
        vm.add_memslot(1, GPA, 4 * PAGE, gmem=gmem, gmem_offset=4 * PAGE,
                       userspace_addr=view.addr + 4 * PAGE)
        gmem.to_private(0, 4 * PAGE)
        gmem.to_shared(0, 4 * PAGE)
        assert agent.write(GPA, 0x5C) is None
        assert view.read(4 * PAGE) == b"\x5c"
        gmem.to_private(4 * PAGE, 4 * PAGE)
        gmem.to_shared(4 * PAGE, 4 * PAGE)
        assert agent.read(GPA) == 0x5C
        assert agent.read(GPA + 3 * PAGE) == 0


def test_a_sparse_guest_memfd_past_2_to_the_52_starts_shared_to_its_last_page(gmem_route):
    """GUEST_MEMFD_FLAG_INIT_SHARED records the whole file shared, whatever its size: a sparse
    file of 2^52 bytes and one page (2^40 + 1 pages, one page ever allocated) is shared in
    its last page too, where a page count taken as bytes shifted the wrong way would wrap
    and the record stop short (the host's touch would then be SIGBUS)."""
    size = (1 << 52) + PAGE
    gmem = gmem_route.vm.create_guest_memfd(size, MMAP_SHARED)
    with gmem.mmap(size - PAGE, PAGE) as last:
        assert last.probe(0, write=True, value=0x7E) == "ok"
        last.write(0, b"\x7e")
        assert last.read(0) == b"\x7e"
