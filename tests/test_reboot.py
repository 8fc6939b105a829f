"""Reboot restoration (seed 'Advantage 2: Can convert independently of memslots') and where
attributes live, on both paths side by side."""

from gmemtest import Agent
from gmemtest.kvm import uapi
from gmemtest.testing import GPA, PAGE

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
    assert not any(ms.gmem is mem.gmem for ms in vm.memslots.values())
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
        assert mem.view.probe(2 * PAGE) == "SIGBUS" and mem.view.probe(PAGE) == "ok"
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
