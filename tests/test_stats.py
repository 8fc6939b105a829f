"""KVM's binary stats, parsed by name."""

import os

import pytest

from gmemtest import Stats
from gmemtest.kvm import uapi
from gmemtest.kvm.ioctl import kvm_ioctl

pytestmark = pytest.mark.needs("KVM_CAP_BINARY_STATS_FD")


def test_vm_stats_have_mapping_level_counters(vm):
    """The VM stats fd names itself kvm-<pid> and carries pages_4k/2m/1g as single
    instant u64 values, readable by name and in a snapshot that agrees with lookups."""
    stats = vm.stats()
    assert stats.id == f"kvm-{os.getpid()}"
    for name in ("pages_4k", "pages_2m", "pages_1g"):
        desc = stats.descs[name]
        assert desc.size == 1
        assert desc.flags & uapi.KVM_STATS_TYPE_MASK == 1  # KVM_STATS_TYPE_INSTANT
        assert isinstance(stats[name], int)
    snap = stats.snapshot()
    assert set(snap) == set(stats.descs)
    assert snap["pages_1g"] == stats["pages_1g"]


def test_stats_fd_matches_a_second_fd(vm):
    """Two stats fds of one VM describe the same stats at the same offsets."""
    first = vm.stats()
    with Stats(kvm_ioctl(vm.fd, "KVM_GET_STATS_FD")) as second:
        assert first.descs == second.descs
        assert first.snapshot().keys() == second.snapshot().keys()


def test_vcpu_stats_parse(vm):
    """vCPU stats come from the same format: names, sizes, and the vCPU's id string."""
    vcpu = vm.create_vcpu()
    with Stats(kvm_ioctl(vcpu.fd, "KVM_GET_STATS_FD")) as stats:
        assert stats.id == f"kvm-{os.getpid()}/vcpu-{vcpu.id}"
        assert "exits" in stats
        assert isinstance(stats["exits"], int)
