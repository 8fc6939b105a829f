"""max_order and mapping level, observed through the VM stats pages_4k / pages_2m / pages_1g
(present leaf mappings per level in KVM's page tables). Faults are made deterministic with
KVM_PRE_FAULT_MEMORY; the stats are read once after each step."""

import os
from pathlib import Path

import pytest

from gmemtest import Agent, KvmError
from gmemtest.kvm import revision, uapi
from gmemtest.testing import ENV_HEADERS, GPA, PAGE
from gmemtest.testing.routes import GuestMemory

M2 = uapi.HUGE_2M
HUGE_ORDER = 9  # page_order of a 2M guest_memfd page

pytestmark = pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD")


def levels(vm):
    s = vm.stats()
    return s["pages_4k"], s["pages_2m"], s["pages_1g"]


def test_guest_memfd_mappings_are_4k(route):
    """Seed 'max_order is returned from guest_memfd'; contract 'guest_memfd always reports
    max_order 0 ... every gmem-backed mapping is 4K (pages_2m stays 0 for it)': a private,
    2M-aligned 2M range maps as 512 4K pages."""
    agent = Agent(route.vm)
    route.memory(1, GPA, M2, private=True)
    k4, m2, g1 = levels(route.vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(route.vm) == (k4 + 512, m2, g1)


def thp_slot(vm):
    """A 2M-aligned memslot whose shared backing is THP-eligible anonymous memory."""
    gmem = vm.create_guest_memfd(M2, 0)
    slot = vm.add_memslot(1, GPA, M2, gmem=gmem, align=M2, hugepage=True)
    slot.backing.write(0, b"\x01")  # the host faults in its huge page
    return slot


def test_shared_thp_maps_2m_until_a_page_goes_private(vm_attributes_route):
    """Seed 'lpage_info helps determine mapping level': shared THP-backed memory maps at 2M;
    one private 4K page makes the 2M range mixed and it maps at 4K; converting back lets it
    map at 2M again after a re-fault."""
    vm = vm_attributes_route.vm
    agent = Agent(vm)
    thp_slot(vm)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2 + 1, "shared THP memory did not map at 2M"
    vm.set_memory_attributes(GPA + 5 * PAGE, PAGE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert levels(vm)[1] == m2  # the conversion zapped the huge mapping
    agent.vcpu.pre_fault(GPA, M2)
    k4_mixed, m2_mixed, _ = levels(vm)
    assert m2_mixed == m2
    assert k4_mixed - k4 == 512
    vm.set_memory_attributes(GPA + 5 * PAGE, PAGE, 0)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2 + 1


def test_misaligned_memslot_stays_4k(vm_attributes_route):
    """A memslot whose GPA and userspace address are not 2M-congruent cannot use huge
    mappings, THP or not: the same THP-backed memory maps at 2M through an aligned memslot
    (the positive control), and through a misaligned one every page of the range is mapped,
    each at 4K."""
    vm = vm_attributes_route.vm
    agent = Agent(vm)
    gmem = vm.create_guest_memfd(2 * M2, 0)
    from gmemtest.kvm import memory

    backing = memory.anonymous(3 * M2, align=M2, hugepage=True)
    backing.write(0, b"\x01")
    backing.write(M2, b"\x01")
    vm.add_memslot(1, GPA, 2 * M2, gmem=gmem, userspace_addr=backing.addr)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, 2 * M2)
    assert levels(vm)[1] > m2, "aligned THP memory did not map at 2M: no control"
    vm.memslots[1].delete()
    vm.add_memslot(1, GPA, 2 * M2, gmem=gmem, userspace_addr=backing.addr + PAGE)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, 2 * M2)
    assert levels(vm)[:2] == (k4 + 1024, m2), "the misaligned range was not mapped 4K, page by page"
    vm.memslots[1].delete()
    backing.close()


def huge_gmem(vm, size=M2, flags=0):
    """A GUEST_MEMFD_FLAG_HUGETLB file of 2M pages (huge guest_memfd, work in progress)."""
    return vm.create_guest_memfd(size, uapi.GUEST_MEMFD_FLAG_HUGETLB | flags,
                                 page_order=HUGE_ORDER)


@pytest.mark.needs("kernel_headers", "vm_type:KVM_X86_SW_PROTECTED_VM")
def test_huge_files_are_offered_to_vms_with_private_memory_only(kvm):
    """Where the kernel's own uapi headers define GUEST_MEMFD_FLAG_HUGETLB (the huge-page
    uAPI, kpatches/' "Back GUEST_MEMFD_FLAG_HUGETLB files with PMD-sized folios") and it has
    transparent huge pages, KVM_CAP_GUEST_MEMFD_FLAGS offers
    HUGETLB on /dev/kvm and to a SW_PROTECTED VM, and never to a default VM (huge files start
    private: of use only with private memory). The huge tests that need the flag cannot then
    skip because a broken kernel stopped offering it."""
    header = revision.kvm_header(Path(os.environ[ENV_HEADERS]))
    if header is None or revision.define_in(header, "GUEST_MEMFD_FLAG_HUGETLB") is None:
        pytest.skip("needs GUEST_MEMFD_FLAG_HUGETLB in the kernel's uapi headers (kpatches/' "
                    "HUGETLB patch)")
    if not Path("/sys/kernel/mm/transparent_hugepage").is_dir():
        pytest.skip("needs CONFIG_TRANSPARENT_HUGEPAGE (no /sys/kernel/mm/transparent_hugepage)")
    huge = uapi.GUEST_MEMFD_FLAG_HUGETLB
    assert kvm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS) & huge
    with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        assert vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS) & huge
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        assert not vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS) & huge


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_huge_guest_memfd(route):
    """Huge-page WIP: 'max_order equals the folio order, and KVM maps a huge page only when the
    whole huge range is private; shared pieces are split to 4K': a private, aligned 2M range
    maps at 2M; one page converted to shared drops it to 4K; converting it back maps 2M again."""
    vm = route.vm
    gmem = huge_gmem(vm)
    agent = Agent(vm)
    slot = vm.add_memslot(1, GPA, M2, gmem=gmem, align=M2)
    mem = GuestMemory(slot, gmem, slot.backing, GPA, M2)
    route.to_private(mem)  # the file starts private; the VM's attributes start shared
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[:2] == (k4, m2 + 1), "a private, aligned 2M range did not map at 2M"
    route.convert(mem, PAGE, PAGE, private=False)
    assert levels(vm)[:2] == (k4, m2), "converting one page left the huge mapping"
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[:2] == (k4 + 512, m2), "a mixed 2M range did not map at 4K"
    route.convert(mem, PAGE, PAGE, private=True)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2 + 1, "the range, private again, did not map at 2M"


def four_private_folios(route):
    """A huge file of four 2M folios in a memslot at GPA, all private: (vm, agent, memory)."""
    vm = route.vm
    gmem = huge_gmem(vm, 4 * M2)
    agent = Agent(vm)
    slot = vm.add_memslot(1, GPA, 4 * M2, gmem=gmem, align=M2)
    mem = GuestMemory(slot, gmem, slot.backing, GPA, 4 * M2)
    route.to_private(mem)
    return vm, agent, mem


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_only_the_folio_with_a_shared_page_maps_at_4k(route):
    """A huge file of four 2M folios, private, with one page of the last folio shared: the
    first three map at 2M, the last page by page at 4K, so the folio that decides is found
    past the first."""
    vm, agent, mem = four_private_folios(route)
    route.convert(mem, 3 * M2 + 7 * PAGE, PAGE, private=False)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, 4 * M2)
    assert levels(vm)[:2] == (k4 + 512, m2 + 3), "the folios did not map by their own state"
    route.convert(mem, 3 * M2 + 7 * PAGE, PAGE, private=True)
    agent.vcpu.pre_fault(GPA, 4 * M2)
    assert levels(vm)[1] == m2 + 4, "the last folio, private again, did not map at 2M"


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_shared_pages_on_folio_edges_decide_only_their_own_folio(route):
    """A huge file of four 2M folios, private, with the last page of the first folio and the
    first page of the third shared: those two folios map page by page, the second and the
    fourth, private from edge to edge, at 2M. The search for a shared page of a folio takes
    its last page and stops there (a search one page long would keep the second at 4K)."""
    vm, agent, mem = four_private_folios(route)
    route.convert(mem, M2 - PAGE, PAGE, private=False)
    route.convert(mem, 2 * M2, PAGE, private=False)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, 4 * M2)
    assert levels(vm)[:2] == (k4 + 2 * 512, m2 + 2), \
        "a shared page on a folio's edge changed the mapping of its neighbour"


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_converting_the_unbound_half_of_a_folio_ends_its_invalidation(gmem_route):
    """A huge 2M file whose memslot binds only its first half: converting the second half (in
    no memslot) invalidates KVM's mappings of the whole folio, and must end that invalidation
    over the whole folio too: the bound half faults in afterwards, page by page (the folio is
    mixed now). An invalidation left running would make every fault in it retry forever."""
    vm = gmem_route.vm
    gmem = huge_gmem(vm, M2)
    agent = Agent(vm)
    vm.add_memslot(1, GPA, M2 // 2, gmem=gmem, align=M2)
    k4, m2, _ = levels(vm)
    gmem.set_attributes(M2 // 2, M2 // 2, 0)
    agent.vcpu.pre_fault(GPA, M2 // 2)
    assert levels(vm)[:2] == (k4 + 256, m2), "the bound half did not map page by page"


@pytest.mark.needs("series")
def test_non_mmap_guest_memfd_never_maps_huge_over_a_private_page(route, kernel_revision):
    """A 2M range of a guest_memfd without MMAP whose shared backing is a transparent huge
    page: where shared gfns come from that backing (per-VM attributes; v8 with in-place
    conversion on) the all-shared range maps at 2M (the control), and one private page in its
    middle keeps it at 4K, every page mapped. As applied, guest_memfd serves every gfn of such
    a memslot: 4K pages (max_order 0) whatever the backing."""
    vm = route.vm
    agent = Agent(vm)
    slot = thp_slot(vm)
    mem = GuestMemory(slot, slot.gmem, slot.backing, GPA, M2)
    route.to_shared(mem)
    from_thp = route.name != "gmem" or not kernel_revision.non_mmap_shared_from_guest_memfd
    k4, m2, _ = levels(vm)  # nothing of the range mapped yet
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[:2] == ((k4, m2 + 1) if from_thp else (k4 + 512, m2)), \
        "the all-shared range did not map as its backing allows"
    route.convert(mem, 256 * PAGE, PAGE, private=True)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2, "a huge mapping covers the private page"
    assert levels(vm)[0] == k4 + 512, "the mixed range was not mapped page by page"


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
@pytest.mark.parametrize("order, flags, why", [
    (0, 0, "page order 0"), (10, 0, "page order 10"), (18, 0, "page order 18 (1G)"),
    (HUGE_ORDER, uapi.GUEST_MEMFD_FLAG_MMAP, "HUGETLB with MMAP"),
    (HUGE_ORDER, uapi.GUEST_MEMFD_FLAG_INIT_SHARED, "HUGETLB with INIT_SHARED"),
])
def test_kpatches_huge_files_take_order_9_only_and_neither_mmap_nor_init_shared(sw_vm, order,
                                                                             flags, why):
    """A rule of kpatches/ (its HUGETLB patch, the huge files it backs from the page allocator),
    not of the
    uAPI: docs/uapi.md ("Huge pages") names 18 (1G) a page order and forbids only INIT_SHARED.
    kpatches takes page order 9 alone (1G would need hugetlb) and refuses MMAP (a host fault on
    a shared page would map its whole folio): EINVAL, as docs/uapi.md's "What kpatches/
    implements of it" says. A kernel that backs 1G or mmap()able huge files fails this test
    by design. Order 9 alone is the control."""
    sw_vm.create_guest_memfd(M2, uapi.GUEST_MEMFD_FLAG_HUGETLB, page_order=HUGE_ORDER)
    with pytest.raises(KvmError) as e:
        sw_vm.create_guest_memfd(M2, uapi.GUEST_MEMFD_FLAG_HUGETLB | flags, page_order=order)
    assert (e.value.call, e.value.errno_name) == ("KVM_CREATE_GUEST_MEMFD", "EINVAL"), why


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_kpatches_huge_file_memslot_starts_on_a_folio(sw_vm):
    """A rule of kpatches/ (its HUGETLB patch), not of the uAPI: a memslot binds a huge file from
    a 2M
    boundary (docs/uapi.md, "What kpatches/ implements of it"): an offset of 4K is EINVAL, 2M
    binds."""
    gmem = huge_gmem(sw_vm, 2 * M2)
    with pytest.raises(KvmError) as e:
        sw_vm.add_memslot(1, GPA, M2, gmem=gmem, gmem_offset=PAGE, align=M2)
    assert (e.value.call, e.value.errno_name) == ("KVM_SET_USER_MEMORY_REGION2", "EINVAL")
    sw_vm.add_memslot(1, GPA, M2, gmem=gmem, gmem_offset=M2, align=M2)


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_huge_guest_memfd_rules(sw_vm):
    """Huge-page WIP: 'HUGETLB with INIT_SHARED is EINVAL; size and fallocate ranges must be
    aligned to the huge size'."""
    gmem = huge_gmem(sw_vm, 2 * M2)
    for flags, size, why in ((uapi.GUEST_MEMFD_FLAG_INIT_SHARED, M2, "INIT_SHARED"),
                             (0, M2 + PAGE, "size not a multiple of 2M")):
        with pytest.raises(KvmError) as e:
            sw_vm.create_guest_memfd(size, uapi.GUEST_MEMFD_FLAG_HUGETLB | flags,
                                     page_order=HUGE_ORDER)
        assert e.value.errno_name == "EINVAL", why
    for offset, length in ((PAGE, M2), (0, PAGE), (M2, M2 - PAGE)):
        for mode in ("allocate", "punch_hole"):
            with pytest.raises(KvmError) as e:
                getattr(gmem, mode)(offset, length)
            assert e.value.errno_name == "EINVAL", (mode, offset, length)
    gmem.allocate(0, 2 * M2)
    gmem.punch_hole(M2, M2)


def huge_private_folios(route, folios: int):
    """A huge file of ``folios`` 2M folios in a memslot at GPA, all private, whose memslot has
    its own shared backing too: (vm, agent, memory)."""
    vm = route.vm
    gmem = huge_gmem(vm, folios * M2)
    agent = Agent(vm)
    slot = vm.add_memslot(1, GPA, folios * M2, gmem=gmem, align=M2)
    mem = GuestMemory(slot, gmem, slot.backing, GPA, folios * M2)
    route.to_private(mem)
    return vm, agent, mem


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM", "series")
def test_a_huge_files_guest_data_across_conversions_both_ways(route, kernel_revision):
    """A huge file of four 2M folios, a byte written by the guest into a page of each while
    private; then a whole folio and one page of another converted to shared and back. Where a
    shared gfn of a huge (non-MMAP) file comes from is the revision's (docs/uapi.md, "The
    series as applied upstream"): as applied, guest_memfd serves it in place, so each page
    keeps the guest's bytes through both conversions; per-VM attributes and v8 serve it from
    the memslot's userspace memory, whose own byte the guest reads while shared, and
    guest_memfd's private page comes back with its byte. Pages never converted keep theirs."""
    from_gmem = route.name == "gmem" and kernel_revision.non_mmap_shared_from_guest_memfd
    vm, agent, mem = huge_private_folios(route, 4)
    pages = [f * M2 + 5 * PAGE for f in range(4)] + [M2 + 511 * PAGE]
    converted = {M2 + 5 * PAGE, M2 + 511 * PAGE, 2 * M2 + 5 * PAGE}
    for i, off in enumerate(pages):
        assert agent.write(GPA + off, 0x60 + i) is None
        mem.view.write(off, bytes([0xB0 + i]))  # the memslot's userspace byte
    route.convert(mem, M2, M2, private=False)
    route.convert(mem, 2 * M2 + 5 * PAGE, PAGE, private=False)
    for i, off in enumerate(pages):
        shared = off in converted
        want = 0xB0 + i if shared and not from_gmem else 0x60 + i
        assert agent.read(GPA + off) == want, f"page {off // PAGE} while shared"
        if shared:
            assert agent.write(GPA + off, 0x70 + i) is None
    route.convert(mem, M2, M2, private=True)
    route.convert(mem, 2 * M2 + 5 * PAGE, PAGE, private=True)
    for i, off in enumerate(pages):
        want = 0x70 + i if off in converted and from_gmem else 0x60 + i
        assert agent.read(GPA + off) == want, f"page {off // PAGE} private again"
        assert mem.view.read(off) == bytes([0x70 + i if off in converted and not from_gmem
                                            else 0xB0 + i]), f"page {off // PAGE}'s userspace"


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_a_whole_faulted_huge_folio_punched_faults_back_zeroed_and_huge(route):
    """A huge file of four 2M folios, private, written and mapped at 2M: punching the second
    folio whole drops its huge mapping (and only its), the guest then reads a zeroed page
    there while the others keep their bytes, and the folio faults back in at 2M."""
    vm, agent, mem = huge_private_folios(route, 4)
    before = levels(vm)[1]
    for f in range(4):
        assert agent.write(GPA + f * M2 + 9 * PAGE, 0x30 + f) is None
    agent.vcpu.pre_fault(GPA, 4 * M2)
    m2 = levels(vm)[1]
    assert m2 == before + 4, "the private folios did not map at 2M"
    mem.gmem.punch_hole(M2, M2)
    assert levels(vm)[1] == m2 - 1, "punching a folio left its huge mapping, or took another"
    assert [agent.read(GPA + f * M2 + 9 * PAGE) for f in range(4)] == [0x30, 0, 0x32, 0x33]
    agent.vcpu.pre_fault(GPA, 4 * M2)
    assert levels(vm)[1] == m2, "the punched folio did not fault back in at 2M"


FOLIO_BATCH = 31  # folios a folio_batch holds: a walk over more must take a second batch


@pytest.mark.needs("gmem_flags:HUGETLB@KVM_X86_SW_PROTECTED_VM")
def test_a_huge_file_of_more_folios_than_one_batch(route):
    """A huge file of 33 2M folios (66 MiB, past one folio_batch of 31), private and mapped at
    2M: a page of the last folio converted to shared drops that folio, and only it, to 4K;
    converted back, it maps at 2M again, and the guest's byte in it is kept."""
    folios = FOLIO_BATCH + 2
    vm, agent, mem = huge_private_folios(route, folios)
    last = (folios - 1) * M2 + 3 * PAGE
    before = levels(vm)[1]
    assert agent.write(GPA + last, 0x4D) is None
    agent.vcpu.pre_fault(GPA, folios * M2)
    k4, m2, _ = levels(vm)
    assert m2 == before + folios, "the private folios did not map at 2M"
    route.convert(mem, last, PAGE, private=False)
    assert levels(vm)[1] == m2 - 1, "the conversion did not zap the last folio's huge mapping"
    agent.vcpu.pre_fault(GPA, folios * M2)
    assert levels(vm)[:2] == (k4 + 512, m2 - 1), "the folios did not map by their own state"
    route.convert(mem, last, PAGE, private=True)
    agent.vcpu.pre_fault(GPA, folios * M2)
    assert levels(vm)[1] == m2, "the last folio, private again, did not map at 2M"
    assert agent.read(GPA + last) == 0x4D
