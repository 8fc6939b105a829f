"""Reboot restoration (seed 'Advantage 2: Can convert independently of memslots') and where
attributes live, on both paths side by side."""

import pytest

from gmemtest import Agent
from gmemtest.kvm import uapi
from gmemtest.testing import GPA, PAGE, GiB

PAGES = 8


def test_reboot_resets_the_file_with_no_memslot_bound(gmem_route):
    """Seed: 'At VM reboot, guest_memfd is disassociated from memslots, and memory needs to be
    restored to allow private faults'; contract: 'A VMM resets a guest by one call over the
    whole file ... then rebinds memslots'. Run with shared pages, delete every memslot, reset
    the whole file to private in one ioctl while nothing is bound, re-add the memslots: the
    guest's faults are served from guest_memfd with the contents it left, the host gets
    SIGBUS."""
    vm = gmem_route.vm
    agent = Agent(vm)
    mem = gmem_route.memory(1, GPA, PAGES * PAGE, private=False)
    for page in range(PAGES):
        assert agent.write(GPA + page * PAGE, 0x10 + page) is None
    vm.memslots[1].delete()
    # The kernel holds no binding of the file now: the whole of it binds again, elsewhere.
    vm.add_memslot(2, GPA + GiB, PAGES * PAGE, gmem=mem.gmem,
                   userspace_addr=mem.view.addr).delete()
    mem.gmem.to_private()  # one call, no memslot bound
    vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(PAGES))
    assert [agent.read(GPA + p * PAGE) for p in range(PAGES)] == \
        [0x10 + p for p in range(PAGES)]


def test_attributes_survive_memslot_recreation_and_hole_punch(route):
    """Contract: 'Shareability is a property of the file ... Memslot creation/deletion never
    changes it. Hole punching never changes it (the page just reads back zero).' On the
    vm-attributes path the attribute lives in the VM, by GPA, and survives too."""
    vm = route.vm
    agent = Agent(vm)
    mem = route.memory(1, GPA, PAGES * PAGE, private=False)
    route.to_private(mem, 2 * PAGE, 2 * PAGE)
    assert agent.write(GPA + 2 * PAGE, 0x99) is None
    vm.memslots[1].delete()
    userspace = mem.view.addr
    vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=userspace)
    assert agent.read(GPA + 2 * PAGE) == 0x99  # still private, still served from guest_memfd
    mem.gmem.punch_hole(2 * PAGE, PAGE)
    assert agent.read(GPA + 2 * PAGE) == 0  # a fresh, zeroed private page
    if route.name == "gmem":
        assert mem.view.probe(2 * PAGE) == "SIGBUS"
        assert mem.view.probe(PAGE) == "ok"
    else:
        mem.view.write(2 * PAGE, b"\x55")  # the shared backing is another page
        assert agent.read(GPA + 2 * PAGE) == 0


def written_then_moved(route, moved):
    """A private memslot the guest wrote 0x21 into, deleted and bound again at ``moved``."""
    vm = route.vm
    agent = Agent(vm)
    mem = route.memory(1, GPA, PAGES * PAGE, private=True)
    assert agent.write(GPA, 0x21) is None
    vm.memslots[1].delete()
    vm.add_memslot(1, moved, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    return agent, mem


def test_restoring_needs_the_vm_ioctl_per_gpa_range(vm_attributes_route):
    """Seed 'Advantage 2' contrasted: upstream, attributes are per VM and per GPA, so after a
    reboot the VMM restores them with one KVM_SET_MEMORY_ATTRIBUTES per GPA range, and a
    guest_memfd bound at another GPA does not carry them along."""
    moved = 8 << 30
    agent, _ = written_then_moved(vm_attributes_route, moved)
    assert agent.read(moved) == 0  # shared at the new GPA: the userspace page
    vm_attributes_route.vm.set_memory_attributes(moved, PAGES * PAGE,
                                                uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert agent.read(moved) == 0x21  # the same guest_memfd page, private again


def test_gmem_attributes_follow_the_file_to_another_gpa(gmem_route):
    """The in-place counterpart: the file carries its shareability, so rebinding it at another
    GPA needs no conversion at all."""
    moved = 8 << 30
    agent, mem = written_then_moved(gmem_route, moved)
    assert agent.read(moved) == 0x21
    assert mem.view.probe(0) == "SIGBUS"


def run_then_unbind(route, *, private: bool):
    """A guest that wrote page p's byte into each page, its memslot deleted as at reboot."""
    vm = route.vm
    agent = Agent(vm)
    mem = route.memory(1, GPA, PAGES * PAGE, private=private)
    for page in range(PAGES):
        assert agent.write(GPA + page * PAGE, 0x30 + page) is None
    vm.memslots[1].delete()
    return agent, mem


def test_reboot_resets_the_file_to_shared(gmem_route):
    """Contract 'Reboot': the reset call goes 'to private, or to shared for INIT_SHARED-style
    boots'. A guest that ran private is reset to shared in one call with no memslot bound: the
    host reads every page (the guest's bytes), and the guest does too once rebound."""
    agent, mem = run_then_unbind(gmem_route, private=True)
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(PAGES))
    mem.gmem.to_shared()
    assert [mem.view.read(p * PAGE) for p in range(PAGES)] == \
        [bytes([0x30 + p]) for p in range(PAGES)]
    gmem_route.vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    assert [agent.read(GPA + p * PAGE) for p in range(PAGES)] == [0x30 + p for p in range(PAGES)]


def test_reboot_reset_from_a_mixed_state(gmem_route):
    """A guest that left its memory mixed (every other page private): one reset call over the
    file makes every page private, whatever state it had."""
    agent, mem = run_then_unbind(gmem_route, private=False)
    for p in range(0, PAGES, 2):
        mem.gmem.to_private(p * PAGE, PAGE)
    assert [mem.view.probe(p * PAGE) for p in range(PAGES)] == ["SIGBUS", "ok"] * (PAGES // 2)
    mem.gmem.to_private()
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(PAGES))
    gmem_route.vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    assert [agent.read(GPA + p * PAGE) for p in range(PAGES)] == [0x30 + p for p in range(PAGES)]


@pytest.mark.needs("gup_test")
def test_reboot_reset_waits_for_the_vmms_pins(gmem_route):
    """Contract 'Reboot': the VMM resets the file 'after dropping its own pins'. While one page
    is still pinned the reset to private is EAGAIN at that page and changes nothing; once
    unpinned the same call goes through."""
    from gmemtest.errors import ConversionError
    from gmemtest.testing import gup

    _, mem = run_then_unbind(gmem_route, private=False)
    with gup.long_term_pin(mem.view.addr + 5 * PAGE, PAGE):
        with pytest.raises(ConversionError) as e:
            mem.gmem.to_private()
        assert (e.value.errno_name, e.value.error_offset) == ("EAGAIN", 5 * PAGE)
        assert all(mem.view.probe(p * PAGE) == "ok" for p in range(PAGES))
    mem.gmem.to_private()
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(PAGES))


def test_reboot_resets_a_mixed_file_to_shared(gmem_route):
    """Contract 'Reboot', the INIT_SHARED-style reset of a guest that left its memory mixed
    (every other page private): one call over the file makes every page shared, the host
    reads each page's byte, and the guest does too once rebound."""
    agent, mem = run_then_unbind(gmem_route, private=False)
    for p in range(0, PAGES, 2):
        mem.gmem.to_private(p * PAGE, PAGE)
    mem.gmem.to_shared()
    assert [mem.view.probe(p * PAGE) for p in range(PAGES)] == ["ok"] * PAGES
    assert [mem.view.read(p * PAGE) for p in range(PAGES)] == \
        [bytes([0x30 + p]) for p in range(PAGES)]
    gmem_route.vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    assert [agent.read(GPA + p * PAGE) for p in range(PAGES)] == [0x30 + p for p in range(PAGES)]


@pytest.mark.needs("gup_test")
def test_reboot_reset_of_a_mixed_file_with_a_pin_held(gmem_route):
    """A mixed file (every other page private) whose shared page 3 the VMM still holds pinned:
    the reset to private is EAGAIN naming that page and changes no page's state, whichever
    it had (the private pages before it stay private, the shared ones after it shared); once
    unpinned, the same call makes every page private with its byte."""
    from gmemtest.errors import ConversionError
    from gmemtest.testing import gup

    agent, mem = run_then_unbind(gmem_route, private=False)
    for p in range(0, PAGES, 2):
        mem.gmem.to_private(p * PAGE, PAGE)
    mixed = ["SIGBUS", "ok"] * (PAGES // 2)
    with gup.long_term_pin(mem.view.addr + 3 * PAGE, PAGE):
        with pytest.raises(ConversionError) as e:
            mem.gmem.to_private()
        assert (e.value.errno_name, e.value.error_offset) == ("EAGAIN", 3 * PAGE)
        assert [mem.view.probe(p * PAGE) for p in range(PAGES)] == mixed
    mem.gmem.to_private()
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(PAGES))
    gmem_route.vm.add_memslot(1, GPA, PAGES * PAGE, gmem=mem.gmem, userspace_addr=mem.view.addr)
    assert [agent.read(GPA + p * PAGE) for p in range(PAGES)] == [0x30 + p for p in range(PAGES)]
