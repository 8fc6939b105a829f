"""max_order and mapping level, observed through the VM stats pages_4k / pages_2m / pages_1g
(present leaf mappings per level in KVM's page tables). Faults are made deterministic with
KVM_PRE_FAULT_MEMORY; the stats are read once after each step."""

import pytest

from gmemtest import Agent, uapi

PAGE = uapi.PAGE_SIZE
M2 = uapi.HUGE_2M
GPA = 4 << 30

pytestmark = pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD")


def levels(vm):
    s = vm.stats()
    return s["pages_4k"], s["pages_2m"], s["pages_1g"]


def test_guest_memfd_mappings_are_4k(path):
    """Seed 'max_order is returned from guest_memfd'; contract 'guest_memfd always reports
    max_order 0 ... every gmem-backed mapping is 4K (pages_2m stays 0 for it)': a private,
    2M-aligned 2M range maps as 512 4K pages."""
    agent = Agent(path.vm)
    path.memory(1, GPA, M2, private=True)
    k4, m2, g1 = levels(path.vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(path.vm) == (k4 + 512, m2, g1)


def thp_slot(vm):
    """A 2M-aligned memslot whose shared backing is THP-eligible anonymous memory."""
    gmem = vm.create_guest_memfd(M2, 0)
    slot = vm.add_memslot(1, GPA, M2, gmem=gmem, align=M2, hugepage=True)
    slot.backing.write(0, b"\x01")  # the host faults in its huge page
    return slot


def test_shared_thp_maps_2m_until_a_page_goes_private(vm_attributes_path):
    """Seed 'lpage_info helps determine mapping level': shared THP-backed memory maps at 2M;
    one private 4K page makes the 2M range mixed and it maps at 4K; converting back lets it
    map at 2M again after a re-fault."""
    vm = vm_attributes_path.vm
    agent = Agent(vm)
    thp_slot(vm)
    k4, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2 + 1, "shared THP memory did not map at 2M"
    vm.set_memory_attributes(GPA + 5 * PAGE, PAGE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert levels(vm)[1] == m2  # the conversion zapped the huge mapping
    agent.vcpu.pre_fault(GPA, M2)
    k4_mixed, m2_mixed, _ = levels(vm)
    assert m2_mixed == m2 and k4_mixed - k4 == 512
    vm.set_memory_attributes(GPA + 5 * PAGE, PAGE, 0)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(vm)[1] == m2 + 1


def test_misaligned_memslot_stays_4k(vm_attributes_path):
    """A memslot whose GPA and userspace address are not 2M-congruent cannot use huge
    mappings, THP or not."""
    vm = vm_attributes_path.vm
    agent = Agent(vm)
    gmem = vm.create_guest_memfd(2 * M2, 0)
    from gmemtest import memory

    backing = memory.anonymous(3 * M2, align=M2, hugepage=True)
    backing.write(0, b"\x01")
    vm.add_memslot(1, GPA, 2 * M2, gmem=gmem, userspace_addr=backing.addr + PAGE)
    _, m2, _ = levels(vm)
    agent.vcpu.pre_fault(GPA, 2 * M2)
    assert levels(vm)[1] == m2
    vm.memslots[1].delete()
    backing.close()


def test_huge_guest_memfd(sw_vm):
    """Huge-page WIP: 'max_order equals the folio order, and KVM maps a huge page only when the
    whole huge range is private; shared pieces are split to 4K'."""
    supported = sw_vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
    if not supported & uapi.GUEST_MEMFD_FLAG_HUGETLB:
        pytest.skip("needs GUEST_MEMFD_FLAG_HUGETLB in KVM_CAP_GUEST_MEMFD_FLAGS "
                    "(huge guest_memfd, work in progress, not in this kernel)")
    agent = Agent(sw_vm)
    gmem = sw_vm.create_guest_memfd(M2, uapi.GUEST_MEMFD_FLAG_HUGETLB, page_order=9)
    sw_vm.add_memslot(1, GPA, M2, gmem=gmem)
    gmem.to_private()
    _, m2, _ = levels(sw_vm)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(sw_vm)[1] == m2 + 1
    gmem.to_shared(PAGE, PAGE)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(sw_vm)[1] == m2
    gmem.to_private(PAGE, PAGE)
    agent.vcpu.pre_fault(GPA, M2)
    assert levels(sw_vm)[1] == m2 + 1
