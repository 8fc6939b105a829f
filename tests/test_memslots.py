"""Memslot binding rules for guest_memfd (KVM_SET_USER_MEMORY_REGION2)."""


import errno

import pytest

from gmemtest import KvmError
from gmemtest.kvm import uapi

MiB = 1 << 20
GPA = 1 << 30

pytestmark = pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "KVM_CAP_USER_MEMORY2")

# The one known deviation: kvm_pvm refuses a guest_memfd range bound twice with EINVAL.
PVM_OVERLAP = pytest.mark.xfail_on(
    "kvm_pvm", errno.EINVAL, reason="this host's KVM (6.18 with kvm_pvm) answers EINVAL for "
    "overlapping guest_memfd bindings; upstream 7.2 answers EEXIST")


@pytest.fixture
def gmem(vm):
    return vm.create_guest_memfd(4 * MiB, 0)


def refused(call, errno_name):
    """KVM_SET_USER_MEMORY_REGION2 refuses ``call`` with ``errno_name``; a refusal with
    another errno propagates as the kernel's KvmError, for the report (and for xfail_on)."""
    try:
        call()
    except KvmError as e:
        assert e.call == "KVM_SET_USER_MEMORY_REGION2", e
        if e.errno_name != errno_name:
            raise
        return
    pytest.fail(f"the kernel accepted it (expected {errno_name})")


@PVM_OVERLAP
def test_binding_whole_file_and_halves(vm, gmem):
    """A file can back two slots at disjoint offsets, and the kernel then holds both halves
    bound: binding either again is EEXIST."""
    vm.add_memslot(1, GPA, 2 * MiB, gmem=gmem, gmem_offset=0)
    vm.add_memslot(2, GPA + 16 * MiB, 2 * MiB, gmem=gmem, gmem_offset=2 * MiB)
    for offset in (0, 2 * MiB):
        refused(lambda o=offset: vm.add_memslot(3, GPA + 64 * MiB, 2 * MiB, gmem=gmem,
                                                gmem_offset=o), "EEXIST")


@pytest.mark.parametrize("offset, size, why", [
    (100, 2 * MiB, "offset not page aligned"),
    (2048, 4096, "offset not page aligned"),
    (4 * MiB, 4096, "offset at the end of the file"),
    (2 * MiB, 4 * MiB, "offset + size beyond the file"),
    (0, 8 * MiB, "size beyond the file"),
    (2**64 - 4096, 8192, "offset + size overflows"),
])
def test_bad_gmem_offset_or_size_is_einval(vm, gmem, offset, size, why):
    """The bound range must be page aligned and inside the file."""
    refused(lambda: vm.add_memslot(1, GPA, size, gmem=gmem, gmem_offset=offset), "EINVAL")


def test_overlapping_gpa_ranges_are_eexist(vm, gmem):
    """Two memslots may not cover the same guest physical page."""
    vm.add_memslot(1, GPA, 2 * MiB, gmem=gmem)
    refused(lambda: vm.add_memslot(2, GPA + 1 * MiB, 2 * MiB), "EEXIST")


@PVM_OVERLAP
def test_overlapping_file_ranges_are_eexist(vm, gmem):
    """A page of a guest_memfd can be bound to only one memslot at a time (upstream
    set_memory_region_test: overlapping bindings fail with EEXIST)."""
    vm.add_memslot(1, GPA, 2 * MiB, gmem=gmem, gmem_offset=0)
    refused(lambda: vm.add_memslot(2, GPA + 16 * MiB, 2 * MiB, gmem=gmem,
                                   gmem_offset=1 * MiB), "EEXIST")


def test_foreign_fd_as_guest_memfd_is_einval(vm, tmp_path):
    """guest_memfd must be a guest_memfd of this VM, not any fd."""
    f = open(tmp_path / "plain", "wb+")
    f.truncate(4 * MiB)
    with f:
        refused(lambda: vm.set_user_memory_region2(
            1, uapi.KVM_MEM_GUEST_MEMFD, GPA, 2 * MiB, 0, 0, f.fileno()), "EINVAL")


def test_other_vms_guest_memfd_is_einval(kvm, vm):
    """A guest_memfd stays tied to the VM that created it."""
    with kvm.create_vm() as other:
        theirs = other.create_guest_memfd(2 * MiB)
        refused(lambda: vm.add_memslot(1, GPA, 2 * MiB, gmem=theirs), "EINVAL")


def still_bound(vm, gmem) -> bool:
    """Whether the kernel still holds file range [0, 2 MiB) of ``gmem`` bound: binding it to
    another memslot is then refused with EEXIST. Another errno propagates as the kernel's
    KvmError (kvm_pvm's EINVAL: the tests using this are PVM_OVERLAP)."""
    try:
        vm.add_memslot(9, GPA + 512 * MiB, 2 * MiB, gmem=gmem)
    except KvmError as e:
        if e.errno_name != "EEXIST":
            raise
        return True
    vm.memslots[9].delete()
    return False


@PVM_OVERLAP
def test_clearing_guest_memfd_flag_is_rejected(vm, gmem):
    """The three-ioctl reproducer of the December 2025 use-after-free fix: create a
    guest_memfd, bind it, then a flags-only update that clears KVM_MEM_GUEST_MEMFD must fail
    (the ABI change the contract records), and the memslot keeps its binding; deleting it
    frees the range (the control)."""
    slot = vm.add_memslot(1, GPA, 2 * MiB, gmem=gmem)
    refused(lambda: slot.set_flags(0), "EINVAL")
    assert still_bound(vm, gmem), "the refused update unbound the file"
    slot.delete()
    assert not still_bound(vm, gmem), "a deleted memslot kept the file bound"


@PVM_OVERLAP
def test_gmem_memslot_delete_and_rebind(vm, gmem):
    """Deleting a memslot unbinds its file range, which can then be bound again, at another
    GPA, and is held by that memslot."""
    slot = vm.add_memslot(1, GPA, 2 * MiB, gmem=gmem)
    assert still_bound(vm, gmem)
    slot.delete()
    vm.add_memslot(2, GPA + 64 * MiB, 2 * MiB, gmem=gmem)
    assert still_bound(vm, gmem)
