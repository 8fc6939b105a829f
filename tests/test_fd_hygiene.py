"""Every fd the harness opens is closed deterministically."""

import os

import pytest

from gmemtest import Agent, KvmError, Stats
from gmemtest.kvm import uapi
from gmemtest.kvm.ioctl import kvm_ioctl


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
def test_fds_return_to_baseline_after_a_vm_lifetime(kvm):
    """A VM with a guest_memfd, memslots, an agent vCPU, stats fds and an mmap leaves no fd
    behind once closed."""
    baseline = open_fds()
    with kvm.create_vm() as vm:
        flags = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS) & uapi.GUEST_MEMFD_FLAG_MMAP
        gmem = vm.create_guest_memfd(2 << 20, flags)
        vm.add_memslot(1, 1 << 32, 2 << 20, gmem=gmem)
        Agent(vm)
        vm.stats()
        Stats(kvm_ioctl(vm.vcpus[0].fd, "KVM_GET_STATS_FD")).close()
        assert len(open_fds() - baseline) >= 4
        if flags:
            with gmem.mmap():
                pass
    assert open_fds() == baseline


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
def test_fds_return_to_baseline_after_failures(kvm):
    """Refused calls (sizes guest_memfd refuses) leak nothing either."""
    baseline = open_fds()
    with kvm.create_vm() as vm:
        for bad in (0, 4097):
            with pytest.raises(KvmError) as e:
                vm.create_guest_memfd(bad)
            assert e.value.errno_name == "EINVAL"
    assert open_fds() == baseline
