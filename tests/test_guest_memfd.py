"""guest_memfd creation, mmap and hole punching on a default VM (upstream semantics)."""

import itertools
import os

import pytest
from test_memslots import PVM_OVERLAP

from gmemtest import KvmError
from gmemtest.kvm import uapi

MiB = 1 << 20
KNOWN_FLAGS = (uapi.GUEST_MEMFD_FLAG_MMAP, uapi.GUEST_MEMFD_FLAG_INIT_SHARED)


def supported_flag_sets(vm):
    """Every combination of the flags KVM_CAP_GUEST_MEMFD_FLAGS reports for this VM."""
    supported = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
    bits = [b for b in KNOWN_FLAGS if supported & b]
    return [sum(c) for n in range(len(bits) + 1) for c in itertools.combinations(bits, n)]


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
def test_every_supported_flag_combination_creates(vm):
    """Each subset of the VM's KVM_CAP_GUEST_MEMFD_FLAGS creates a file of the asked size."""
    combos = supported_flag_sets(vm)
    assert 0 in combos
    assert len(combos) >= 2
    for flags in combos:
        gmem = vm.create_guest_memfd(2 * MiB, flags)
        assert os.fstat(gmem.fd).st_size == 2 * MiB
        if flags & uapi.GUEST_MEMFD_FLAG_MMAP and flags & uapi.GUEST_MEMFD_FLAG_INIT_SHARED:
            with gmem.mmap() as view:  # the flags took: a shared file maps and reads zero
                assert view.read(MiB, 8) == bytes(8)


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
@pytest.mark.parametrize("size, flags, why", [
    (2 * MiB, 1 << 63, "unknown flag bit 63"),
    (2 * MiB, 1 << 8, "unknown flag bit 8"),
    (0, 0, "size 0"),
    (4096 + 1, 0, "size not page aligned"),
    (2 * MiB - 512, 0, "size not page aligned"),
    (-4096 & (2**64 - 1), 0, "negative size as loff_t"),
])
def test_invalid_creation_is_einval(vm, size, flags, why):
    """KVM_CREATE_GUEST_MEMFD rejects unknown flags and sizes that are 0 or unaligned."""
    with pytest.raises(KvmError) as e:
        vm.create_guest_memfd(size, flags)
    assert e.value.errno_name == "EINVAL", why
    assert e.value.arguments["size"] == size


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
def test_unsupported_known_flag_is_einval(vm):
    """A known flag this VM type does not support (per KVM_CAP_GUEST_MEMFD_FLAGS) is EINVAL."""
    supported = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
    unsupported = [f for f in (*KNOWN_FLAGS, uapi.GUEST_MEMFD_FLAG_HUGETLB) if not supported & f]
    assert unsupported, "every known flag is supported: nothing to reject"
    for flag in unsupported:
        with pytest.raises(KvmError) as e:
            vm.create_guest_memfd(2 * MiB, flag)
        assert e.value.errno_name == "EINVAL"


@pytest.fixture
def shared_gmem(vm):
    return vm.create_guest_memfd(2 * MiB, uapi.GUEST_MEMFD_FLAG_MMAP
                                 | uapi.GUEST_MEMFD_FLAG_INIT_SHARED)


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_mmap_shared_reads_and_writes_the_file(vm, shared_gmem):
    """MAP_SHARED of an MMAP|INIT_SHARED file: fresh pages read zero, writes are seen by a
    second mapping of the same file (one page cache, not a copy)."""
    with shared_gmem.mmap() as a, shared_gmem.mmap() as b:
        assert a.read(4096, 16) == bytes(16)
        a.write(4096, b"guest_memfd")
        assert b.read(4096, 11) == b"guest_memfd"
        assert a.probe(2 * MiB - 1) == "ok"


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_mmap_private_is_refused(vm, shared_gmem):
    """guest_memfd refuses MAP_PRIVATE: a COW copy would escape the file's shareability."""
    with pytest.raises(KvmError) as e:
        shared_gmem.mmap(shared=False)
    assert e.value.call == "mmap"
    assert e.value.errno_name == "EINVAL"


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD")
def test_mmap_without_mmap_flag_is_refused(vm):
    """A file created without GUEST_MEMFD_FLAG_MMAP cannot be mapped at all."""
    gmem = vm.create_guest_memfd(2 * MiB, 0)
    with pytest.raises(KvmError) as e:
        gmem.mmap()
    assert (e.value.call, e.value.errno_name) == ("mmap", "ENODEV")


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_punch_hole_zeroes_only_the_range(vm, shared_gmem):
    """fallocate(PUNCH_HOLE|KEEP_SIZE) frees the pages: they read back zero; neighbours keep
    their data."""
    with shared_gmem.mmap() as m:
        for page in range(4):
            m.write(page * 4096, bytes([0xA0 + page]) * 4096)
        shared_gmem.punch_hole(4096, 2 * 4096)
        assert m.read(0, 4096) == b"\xa0" * 4096
        assert m.read(4096, 2 * 4096) == bytes(2 * 4096)
        assert m.read(3 * 4096, 4096) == b"\xa3" * 4096


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
def test_punch_hole_unaligned_is_einval(vm, shared_gmem):
    """Hole punching works on whole pages only."""
    with pytest.raises(KvmError) as e:
        shared_gmem.punch_hole(100, 4096)
    assert e.value.errno_name == "EINVAL"


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED", "cachestat")
@pytest.mark.parametrize("field, index, value",
                         [("reserved", i, 0xFFFF_FFFF_FFFF_FFFF) for i in range(5)]
                         + [("pad", i, 0xFF) for i in range(7)],
                         ids=[f"reserved[{i}]" for i in range(5)] + [f"pad[{i}]" for i in range(7)])
def test_unused_fields_of_creation_are_ignored(vm, field, index, value):
    """KVM_CREATE_GUEST_MEMFD checks neither its reserved words (7.2 and the series) nor the
    seven pad bytes after the page-order byte (kpatches/' "Back GUEST_MEMFD_FLAG_HUGETLB files
    with PMD-sized folios"; reserved bytes in 7.2): a file
    created with one of them set is the file the same call makes without it: its size, its
    flags (it maps, shared, and reads zero), 4K pages (allocating one page puts one page in
    its page cache)."""
    words = [0] * (5 if field == "reserved" else 7)
    words[index] = value
    flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED
    gmem = vm.create_guest_memfd(2 * MiB, flags, **{field: words})
    assert os.fstat(gmem.fd).st_size == 2 * MiB
    gmem.allocate(4096, 4096)
    assert gmem.cached() == 1
    with gmem.mmap() as view:
        assert view.read(4096, 8) == bytes(8)


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "cachestat")
def test_page_order_without_hugetlb_is_ignored(vm):
    """The page-order byte of KVM_CREATE_GUEST_MEMFD (the huge-page work in progress,
    kpatches/' HUGETLB patch; a reserved byte in 7.2) means something only with
    GUEST_MEMFD_FLAG_HUGETLB:
    given alone it is ignored, and allocating one page puts one page in the file's page cache,
    not a 2M folio (cachestat counts them)."""
    gmem = vm.create_guest_memfd(2 * MiB, 0, page_order=9)
    assert gmem.cached() == 0
    gmem.allocate(4096, 4096)
    assert gmem.cached() == 1


@pytest.mark.needs("KVM_CAP_GUEST_MEMFD", "gmem_flags:MMAP+INIT_SHARED")
@PVM_OVERLAP
def test_memslot_padding_is_ignored(vm, shared_gmem):
    """KVM_SET_USER_MEMORY_REGION2 does not check pad1 and pad2 (7.2): a memslot set with
    them nonzero binds as one without, and the guest_memfd range it took cannot be bound
    twice."""
    with shared_gmem.mmap() as view:
        vm.set_user_memory_region2(1, uapi.KVM_MEM_GUEST_MEMFD, 1 << 30, 2 * MiB, view.addr,
                                   0, shared_gmem.fd, pad1=0xFFFF_FFFF,
                                   pad2=[0xFFFF_FFFF_FFFF_FFFF] * 14)
        with pytest.raises(KvmError) as e:
            vm.set_user_memory_region2(2, uapi.KVM_MEM_GUEST_MEMFD, 2 << 30, 2 * MiB,
                                       view.addr, 0, shared_gmem.fd)
        if e.value.errno_name != "EEXIST":
            raise e.value  # kvm_pvm's EINVAL: PVM_OVERLAP
        vm.set_user_memory_region2(1, 0, 1 << 30, 0)  # delete
