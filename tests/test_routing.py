"""Fault routing on both conversion paths: which backing serves a gfn, and what the guest sees
when it converts memory itself."""

import pytest

from gmemtest import Agent, Hypercall, Mmio
from gmemtest.kvm import uapi
from gmemtest.testing import GPA, PAGE, PRIVATE
from gmemtest.testing.routes import GuestMemory


def test_private_and_shared_are_served_from_the_right_backing(route):
    """Seed 'Determining fault path (slot->userspace_addr vs kvm_gmem_get_pfn())'; contract
    'Fault routing': a guest write to a private page lands in guest_memfd, invisible to the
    host's shared view (vm-attributes: another allocation; gmem: SIGBUS); once shared, the
    guest reads the shared backing (vm-attributes: the userspace page; gmem: the same page)."""
    agent = Agent(route.vm)
    mem = route.memory(1, GPA, 4 * PAGE, private=True)
    assert agent.write(GPA + PAGE, 0x77) is None
    assert agent.read(GPA + PAGE) == 0x77
    route.to_shared(mem, PAGE, PAGE)
    if route.name == "gmem":
        assert mem.view.read(PAGE) == b"\x77"  # one page, both states
    else:
        assert mem.view.read(PAGE) == b"\x00"  # the userspace page, never written
        mem.view.write(PAGE, b"\x66")
    assert agent.read(GPA + PAGE) == (0x77 if route.name == "gmem" else 0x66)


def test_guest_initiated_conversion(route):
    """Contract: 'guest-requested conversions arrive as KVM_HC_MAP_GPA_RANGE hypercall exits,
    and the VMM converts'. The harness converts through the active path and resumes; the
    next access lands on the page of the new state."""
    route.vm.enable_cap(uapi.KVM_CAP_EXIT_HYPERCALL, 1 << uapi.KVM_HC_MAP_GPA_RANGE)
    agent = Agent(route.vm)
    mem = route.memory(1, GPA, 4 * PAGE, private=False)
    mem.view.write(2 * PAGE, b"\x31")
    exit = agent.map_gpa_range(GPA + 2 * PAGE, 1, private=True)
    assert isinstance(exit, Hypercall)
    assert exit.args[:3] == (GPA + 2 * PAGE, 1, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED)
    route.to_private(mem, 2 * PAGE, PAGE)
    assert agent.resume(hypercall_ret=0) == 0
    assert agent.write(GPA + 2 * PAGE + 1, 0x32) is None
    if route.name == "gmem":
        assert mem.view.probe(2 * PAGE) == "SIGBUS"
    else:
        assert mem.view.read(2 * PAGE, 2) == b"\x31\x00"  # the shared page kept its own data
    exit = agent.map_gpa_range(GPA + 2 * PAGE, 1, private=False)
    assert isinstance(exit, Hypercall)
    assert exit.args[2] == uapi.KVM_MAP_GPA_RANGE_DECRYPTED
    route.to_shared(mem, 2 * PAGE, PAGE)
    assert agent.resume(hypercall_ret=0) == 0
    expect = 0x32 if route.name == "gmem" else 0x00
    assert agent.read(GPA + 2 * PAGE + 1) == expect


@pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY")
@pytest.mark.parametrize("private", [True, False], ids=["private", "shared"])
def test_pre_fault_maps_without_running(route, private):
    """KVM_PRE_FAULT_MEMORY maps a private or shared range in KVM's page tables without a
    guest run: pages_4k rises by the range's pages (guest_memfd reports max_order 0)."""
    agent = Agent(route.vm)
    mem = route.memory(1, GPA, 16 * PAGE, private=private)
    stats = route.vm.stats()
    before = stats["pages_4k"]
    done = agent.vcpu.pre_fault_memory(GPA, 16 * PAGE)
    assert done == (GPA + 16 * PAGE, 0)
    assert stats["pages_4k"] - before == mem.size // PAGE


@pytest.mark.needs("series")
def test_non_mmap_guest_memfd_shared_backing(route, kernel_revision):
    """Which page serves a shared gfn of a guest_memfd created without GUEST_MEMFD_FLAG_MMAP.
    Per-VM attributes (upstream), and v8 with in-place conversion: the memslot's
    userspace_addr, while guest_memfd serves private gfns (and, in place, decides which is
    which); each backing keeps its own byte across conversions both ways. As applied, with
    in-place conversion on every guest_memfd memslot is served from guest_memfd: one page
    per gfn in both states, and userspace_addr is never what the guest sees."""
    from_gmem = route.name == "gmem" and kernel_revision.non_mmap_shared_from_guest_memfd
    agent = Agent(route.vm)
    gmem = route.vm.create_guest_memfd(4 * PAGE, 0)
    slot = route.vm.add_memslot(1, GPA, 4 * PAGE, gmem=gmem)
    assert slot.backing is not None
    mem = GuestMemory(slot, gmem, slot.backing, GPA, 4 * PAGE)
    route.to_shared(mem)
    slot.backing.write(PAGE, b"\x22")
    assert agent.write(GPA + 2 * PAGE, 0x23) is None
    if from_gmem:
        assert agent.read(GPA + PAGE) == 0, "a shared gfn read userspace_addr's byte"
        assert slot.backing.read(2 * PAGE) == b"\x00", "a shared store landed in userspace"
    else:
        assert agent.read(GPA + PAGE) == 0x22, "a shared gfn did not read userspace_addr's byte"
        assert slot.backing.read(2 * PAGE) == b"\x23", "a shared store missed userspace_addr"
    route.to_private(mem, PAGE, 2 * PAGE)
    assert agent.read(GPA + 2 * PAGE) == (0x23 if from_gmem else 0), \
        "converting to private moved the gfn to another page" if from_gmem else \
        "guest_memfd's page was not the one served while private"
    assert agent.write(GPA + PAGE, 0x33) is None
    assert slot.backing.read(PAGE, 2) == (b"\x22\x00")
    route.to_shared(mem, PAGE, 2 * PAGE)
    assert agent.read(GPA + PAGE) == (0x33 if from_gmem else 0x22)
    assert agent.read(GPA + 2 * PAGE) == 0x23
    route.to_private(mem, PAGE, PAGE)
    assert agent.read(GPA + PAGE) == 0x33


@pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD", "series")
@pytest.mark.parametrize("private", [True, False], ids=["to-private", "to-shared"])
def test_mixed_range_conversion_zaps(route, private, kernel_revision):
    """Which of KVM's mappings a conversion of a mixed range zaps. Upstream's VM ioctl, and
    v8's guest_memfd ioctl: the WHOLE requested range when any page in it changes state. As
    applied, the guest_memfd ioctl zaps only the mappings of the state being left: a page
    already in the requested state keeps its mapping. Either way a range wholly in the
    requested state returns early and zaps nothing. Of 8 mapped pages, [2, 6) is converted
    while page 3 is in the requested state already (pages_4k counts the mappings)."""
    whole = route.name != "gmem" or kernel_revision.zaps_pages_already_converted
    vcpu = Agent(route.vm).vcpu
    mem = route.memory(1, GPA, 8 * PAGE, private=not private)
    route.convert(mem, 3 * PAGE, PAGE, private=private)
    stats = route.vm.stats()
    unmapped = stats["pages_4k"]
    vcpu.pre_fault(GPA, 8 * PAGE)
    assert stats["pages_4k"] == unmapped + 8
    route.convert(mem, 2 * PAGE, 4 * PAGE, private=private)
    if whole:
        assert stats["pages_4k"] == unmapped + 4, "a page of the range kept its mapping"
    else:
        assert stats["pages_4k"] == unmapped + 5, \
            "the page already in the requested state lost its mapping, or a changed one kept it"
    vcpu.pre_fault(GPA, 8 * PAGE)
    route.convert(mem, 2 * PAGE, 4 * PAGE, private=private)
    assert stats["pages_4k"] == unmapped + 8, "a conversion that changed nothing zapped"


def one_file_two_memslots(vm):
    """An 8-page INIT_SHARED file bound by two memslots, its first half at 8 GiB and its second
    at 12 GiB: (the file, the host's mmap of it)."""
    gmem = vm.create_guest_memfd(8 * PAGE, uapi.GUEST_MEMFD_FLAG_MMAP
                                 | uapi.GUEST_MEMFD_FLAG_INIT_SHARED)
    view = gmem.mmap()
    vm.add_memslot(1, 8 << 30, 4 * PAGE, gmem=gmem, gmem_offset=0, userspace_addr=view.addr)
    vm.add_memslot(2, 12 << 30, 4 * PAGE, gmem=gmem, gmem_offset=4 * PAGE,
                   userspace_addr=view.addr + 4 * PAGE)
    return gmem, view


def test_two_memslots_one_file(gmem_route):
    """Seed 'Can convert independently of memslots': one ioctl over the file reaches two
    memslots bound at different offsets (host SIGBUS, guest contents kept, both ways)."""
    vm = gmem_route.vm
    agent = Agent(vm)
    gmem, view = one_file_two_memslots(vm)
    with view:
        assert agent.write(8 << 30, 0x41) is None
        assert agent.write(12 << 30, 0x42) is None
        gmem.to_private(0, 8 * PAGE)
        assert view.probe(0) == "SIGBUS"
        assert view.probe(4 * PAGE) == "SIGBUS"
        assert agent.read(8 << 30) == 0x41
        assert agent.read(12 << 30) == 0x42
        gmem.to_shared(0, 8 * PAGE)
        assert view.read(0) == b"\x41"
        assert view.read(4 * PAGE) == b"\x42"


@pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD")
def test_conversion_zaps_the_range_in_every_memslot(gmem_route):
    """Seed 'Advantage 1' (guest_memfd notifies KVM from the conversion ioctl); contract
    'Every conversion zaps KVM's stage-2 mappings of the range in every memslot bound to the
    file'. One page serves both states, so a missing zap is invisible in the contents: the
    VM's pages_4k shows it. File pages [2, 6) straddle both memslots; converting them either
    way removes exactly their 4 mappings, and the 4 outside the range stay."""
    vm = gmem_route.vm
    vcpu = Agent(vm).vcpu
    gmem, view = one_file_two_memslots(vm)
    stats = vm.stats()
    unmapped = stats["pages_4k"]
    with view:
        for private in (True, False):
            vcpu.pre_fault(8 << 30, 4 * PAGE)
            vcpu.pre_fault(12 << 30, 4 * PAGE)
            assert stats["pages_4k"] == unmapped + 8
            gmem.set_attributes(2 * PAGE, 4 * PAGE, PRIVATE if private else 0)
            assert stats["pages_4k"] == unmapped + 4, f"to {'private' if private else 'shared'}"


def test_private_page_reachable_after_memslot_comes_back(route):
    """Contract 'Fault routing' (an access after memslot deletion exits with MMIO for gmem; a
    shared gfn does for vm-attributes): KVM caches that answer in an MMIO SPTE. When the
    memslot comes back and the gfn is private (gmem: it always was; vm-attributes: converted
    while the memslot was gone), the guest must reach its private page. Without kpatches/'
    "Classify faults on stale MMIO SPTEs of SW-protected VMs"
    7.2 classifies the fault on the stale MMIO SPTE as shared and exits with
    KVM_EXIT_MEMORY_FAULT (shared) on every retry."""
    agent = Agent(route.vm)
    mem = route.memory(1, GPA, 4 * PAGE, private=True)
    assert agent.write(GPA + PAGE, 0x5A) is None
    if route.name == "vm-attributes":
        route.to_shared(mem, PAGE, PAGE)  # the private byte stays in guest_memfd
    old = mem.slot
    old.delete()
    exit = agent.read(GPA + PAGE)
    assert isinstance(exit, Mmio), exit
    assert exit.gpa == GPA + PAGE, exit
    assert agent.resume() == exit.data[0]  # the read completes with what the VMM returned
    if route.name == "vm-attributes":
        route.vm.set_memory_attributes(GPA + PAGE, PAGE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    route.vm.add_memslot(1, old.gpa, old.size, userspace_addr=old.userspace_addr, gmem=old.gmem)
    assert agent.read(GPA + PAGE) == 0x5A
