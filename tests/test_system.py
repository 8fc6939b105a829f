"""/dev/kvm and VM creation on the running kernel."""

import pytest

from gmemtest import KvmError, uapi
from gmemtest.seriesconf import in_place_conversion_param


def test_api_version_is_12(kvm):
    """KVM_GET_API_VERSION has been 12 since 2.6.22; anything else is not KVM as we know it."""
    assert kvm.api_version() == uapi.KVM_API_VERSION


def test_default_vm_type_is_offered_and_creates(kvm):
    """KVM_CAP_VM_TYPES always includes KVM_X86_DEFAULT_VM, and KVM_CREATE_VM(0) works."""
    assert uapi.KVM_X86_DEFAULT_VM in kvm.vm_types()
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        assert vm.fd >= 0
        assert vm.check_extension(uapi.KVM_CAP_USER_MEMORY2) == 1


def test_unoffered_vm_type_is_refused(kvm):
    """KVM_CREATE_VM with a type outside KVM_CAP_VM_TYPES fails with EINVAL."""
    unoffered = next(t for t in range(1, 64) if t not in kvm.vm_types())
    with pytest.raises(KvmError) as e:
        kvm.create_vm(unoffered)
    assert e.value.errno_name == "EINVAL"
    assert e.value.call == "KVM_CREATE_VM"
    assert e.value.arguments == {"type": unoffered}


@pytest.mark.needs("vm_type:KVM_X86_SW_PROTECTED_VM")
def test_sw_protected_vm_creates_with_private_memory(kvm):
    """A KVM_X86_SW_PROTECTED_VM has private memory: INIT_SHARED is not among its guest_memfd
    flags unless in-place conversion is on (contract: 'INIT_SHARED is refused for VMs with
    private memory')."""
    with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        flags = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
        assert flags & uapi.GUEST_MEMFD_FLAG_MMAP
        expect_shared = bool(in_place_conversion_param())
        assert bool(flags & uapi.GUEST_MEMFD_FLAG_INIT_SHARED) == expect_shared


@pytest.mark.needs("vm_type:KVM_X86_SW_PROTECTED_VM")
def test_init_shared_file_on_a_vm_with_private_memory(kvm):
    """Contract: upstream 'INIT_SHARED is refused for VMs with private memory' (EINVAL); with
    in-place conversion on, 'INIT_SHARED is allowed for SW_PROTECTED VMs' and the file's pages
    start shared (the host can write them)."""
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        if not in_place_conversion_param():
            with pytest.raises(KvmError) as e:
                vm.create_guest_memfd(1 << 20, flags)
            assert e.value.errno_name == "EINVAL"
            return
        gmem = vm.create_guest_memfd(1 << 20, flags)
        with gmem.mmap() as view:
            view.write(0, b"\x01")
            assert view.read(0) == b"\x01"


def test_unknown_capability_reads_zero(kvm):
    """KVM_CHECK_EXTENSION answers 0, not an error, for a number it does not know."""
    assert kvm.check_extension(100000) == 0
