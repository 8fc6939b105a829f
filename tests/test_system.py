"""/dev/kvm and VM creation on the running kernel."""

import pytest

from gmemtest import KvmError
from gmemtest.kvm import revision as rev
from gmemtest.kvm import uapi
from gmemtest.testing.plugin import switch


def test_api_version_is_12(kvm):
    """KVM_GET_API_VERSION has been 12 since 2.6.22; anything else is not KVM as we know it."""
    assert kvm.api_version() == uapi.KVM_API_VERSION


def test_default_vm_type_is_offered_and_creates(kvm):
    """KVM_CAP_VM_TYPES always includes KVM_X86_DEFAULT_VM, and KVM_CREATE_VM(0) works."""
    assert uapi.KVM_X86_DEFAULT_VM in kvm.vm_types()
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        assert vm.check_extension(uapi.KVM_CAP_USER_MEMORY2) == 1


def test_unoffered_vm_type_is_refused(kvm):
    """KVM_CREATE_VM with a type outside KVM_CAP_VM_TYPES fails with EINVAL."""
    unoffered = next(t for t in range(1, 64) if t not in kvm.vm_types())
    with pytest.raises(KvmError) as e:
        kvm.create_vm(unoffered)
    assert e.value.errno_name == "EINVAL"
    assert e.value.call == "KVM_CREATE_VM"
    assert e.value.arguments == {"type": unoffered}


@pytest.mark.parametrize("vm_type", [
    pytest.param(t, id=name, marks=pytest.mark.needs(f"vm_type:{name}", "KVM_CAP_GUEST_MEMFD"))
    for t, name in sorted(uapi.VM_TYPE_NAMES.items())])
def test_init_shared_per_vm_type(kvm, vm_type):
    """Contract: upstream 'INIT_SHARED is refused for VMs with private memory'; with in-place
    conversion on, v8 allows it for every VM type with private memory (contract 'Checked
    against the real v8'). Per VM type the kernel offers: KVM_CAP_GUEST_MEMFD_FLAGS on the VM
    lists INIT_SHARED exactly when creation with it succeeds, and then the file's pages start
    shared (the host writes and reads them back); otherwise creation is EINVAL."""
    allowed = vm_type not in uapi.PRIVATE_MEM_VM_TYPES or switch().on
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    with kvm.create_vm(vm_type) as vm:
        offered = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
        assert bool(offered & uapi.GUEST_MEMFD_FLAG_INIT_SHARED) == allowed, hex(offered)
        if not allowed:
            with pytest.raises(KvmError) as e:
                vm.create_guest_memfd(1 << 20, flags)
            assert e.value.errno_name == "EINVAL"
            return
        gmem = vm.create_guest_memfd(1 << 20, flags)
        with gmem.mmap() as view:
            view.write(0, b"\x01")
            assert view.read(0) == b"\x01"


def test_vm_ioctl_exists_exactly_with_vm_memory_attributes(kvm, vm_attributes_config):
    """Contract 'Checked against the real v8': KVM_SET_MEMORY_ATTRIBUTES exists only in a
    kernel built with per-VM memory attributes (CONFIG_KVM_VM_MEMORY_ATTRIBUTES; upstream's
    CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES); without them it is ENOTTY and
    KVM_CAP_MEMORY_ATTRIBUTES reports 0. With them, setting no attribute on a range that has
    none is valid on any VM."""
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        if vm_attributes_config:
            vm.set_memory_attributes(4 << 30, 4096, 0)
            return
        assert vm.check_extension(uapi.KVM_CAP_MEMORY_ATTRIBUTES) == 0
        with pytest.raises(KvmError) as e:
            vm.set_memory_attributes(4 << 30, 4096, 0)
        assert e.value.errno_name == "ENOTTY"


@pytest.mark.needs("switch:default")
def test_switch_default_follows_vm_memory_attributes(kvm, vm_attributes_config,
                                                    kernel_revision):
    """Contract: kvm.gmem_in_place_conversion 'default on only when
    CONFIG_KVM_VM_MEMORY_ATTRIBUTES=n' (v8: the option is user-selectable); as applied, the
    parameter exists only with that option, and without it in-place conversion is always on
    (the conversion cap answers PRIVATE). Observable where the kernel command line leaves the
    switch alone."""
    param = rev.switch_param()
    if vm_attributes_config:
        assert param is False, "with per-VM attributes in-place conversion defaults to off"
    elif kernel_revision.switch_without_vm_attributes:
        assert param is True, "without per-VM attributes the switch defaults to on (v8)"
    else:
        assert param is None, f"{rev.PARAM} exists without per-VM memory attributes"
    on = bool(kvm.check_extension(kernel_revision.cap) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    assert on == (not vm_attributes_config), "the conversion cap disagrees with the default"


def test_unknown_capability_reads_zero(kvm):
    """KVM_CHECK_EXTENSION answers 0, not an error, for a number it does not know."""
    assert kvm.check_extension(100000) == 0
