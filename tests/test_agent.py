"""The guest agent on guest_memfd-backed memory of a default VM (MMAP|INIT_SHARED)."""

import pytest

from gmemtest import Agent, Exit, Hypercall, Mmio
from gmemtest.kvm import uapi
from gmemtest.testing import GiB

MiB = 1 << 20
FLAGS = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED


@pytest.fixture
def agent(vm):
    return Agent(vm)


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
@pytest.mark.parametrize("gpa", [16 * MiB, 4 * GiB], ids=["16MiB", "4GiB"])
def test_guest_write_lands_in_guest_memfd(vm, agent, gpa):
    """A guest store to a gmem-only memslot is served from the guest_memfd page: the host
    reads it back through the file's mmap, at the right offset, with neighbours untouched."""
    gmem = vm.create_guest_memfd(2 * MiB, FLAGS)
    with gmem.mmap() as m:
        vm.add_memslot(1, gpa, 2 * MiB, gmem=gmem, userspace_addr=m.addr)
        assert agent.write(gpa + 0x1234, 0x42) is None
        assert m.read(0x1234) == b"\x42"
        assert m.read(0x1233) == b"\x00"
        assert m.read(0x1235) == b"\x00"
        assert agent.write(gpa + 2 * MiB - 8, 0x1122334455667788, width=8) is None
        assert m.read_u64(2 * MiB - 8) == 0x1122334455667788


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_host_write_is_seen_by_guest(vm, agent):
    """The other direction: a host store through the gmem mmap is what the guest loads."""
    gmem = vm.create_guest_memfd(2 * MiB, FLAGS)
    with gmem.mmap() as m:
        vm.add_memslot(1, 4 * GiB, 2 * MiB, gmem=gmem, userspace_addr=m.addr)
        m.write(0x10, b"\x5a")
        m.write_u64(0x100, 0xDEADBEEFCAFEF00D)
        assert agent.read(4 * GiB + 0x10) == 0x5A
        assert agent.read(4 * GiB + 0x100, width=8) == 0xDEADBEEFCAFEF00D


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_read_modify_write_and_touch(vm, agent):
    """lock xadd returns the old value and stores the sum; touching each page writes one byte
    per page and reads them back as a sum."""
    gmem = vm.create_guest_memfd(2 * MiB, FLAGS)
    with gmem.mmap() as m:
        vm.add_memslot(1, 4 * GiB, 2 * MiB, gmem=gmem, userspace_addr=m.addr)
        m.write(0, b"\x10")
        assert agent.add(4 * GiB, 5) == 0x10
        assert m.read(0) == b"\x15"
        assert not isinstance(agent.touch(4 * GiB + 4096, 511, write=True, value=2), Exit)
        assert agent.touch(4 * GiB + 4096, 511) == 2 * 511
        assert all(m.read(p * 4096) == b"\x02" for p in range(1, 512))


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_access_without_memslot_is_mmio(vm, agent):
    """A gfn no memslot covers is emulated MMIO: the read exits with KVM_EXIT_MMIO for that
    GPA, and resuming completes it with the data the host supplied (zero)."""
    exit = agent.read(8 * GiB + 8)
    assert isinstance(exit, Mmio)
    assert (exit.gpa, exit.length, exit.is_write) == (8 * GiB + 8, 1, False)
    assert agent.resume() == 0


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_punched_page_reads_zero_in_guest(vm, agent):
    """After a hole punch the guest faults in a fresh, zeroed page."""
    gmem = vm.create_guest_memfd(2 * MiB, FLAGS)
    with gmem.mmap() as m:
        vm.add_memslot(1, 4 * GiB, 2 * MiB, gmem=gmem, userspace_addr=m.addr)
        assert agent.write(4 * GiB + 4096, 0x77) is None
        gmem.punch_hole(4096, 4096)
        assert agent.read(4 * GiB + 4096) == 0


@pytest.mark.needs("KVM_CAP_EXIT_HYPERCALL", "guest_hypercalls")
def test_map_gpa_range_hypercall_exits_to_host(vm):
    """With KVM_CAP_EXIT_HYPERCALL enabled for KVM_HC_MAP_GPA_RANGE, the guest's request
    arrives as KVM_EXIT_HYPERCALL with (gpa, npages, attributes), and the value the host puts in
    run->hypercall.ret is what the guest's hypercall returns."""
    vm.enable_cap(uapi.KVM_CAP_EXIT_HYPERCALL, 1 << uapi.KVM_HC_MAP_GPA_RANGE)
    agent = Agent(vm)
    exit = agent.map_gpa_range(4 * GiB, 3, private=True)
    assert isinstance(exit, Hypercall)
    assert exit.nr == uapi.KVM_HC_MAP_GPA_RANGE
    assert exit.longmode
    assert exit.args[:3] == (4 * GiB, 3, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED)
    assert agent.resume(hypercall_ret=0x5A) == 0x5A
