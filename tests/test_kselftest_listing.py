"""Which of a kernel tree's KVM selftests a boot runs, how they are built, and how a program's
kselftest output is read (gmemtest.vmtier.selftests, gmemtest.testing.kselftest)."""

import textwrap

import pytest

from gmemtest.errors import GmemtestError
from gmemtest.testing import kselftest
from gmemtest.vmtier import selftests
from gmemtest.vmtier.progress import Progress

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)

VM_HELPER = """\
static inline void vm_set_memory_attributes(struct kvm_vm *vm, u64 gpa, u64 size, u64 attrs)
{
	struct kvm_memory_attributes attr = {
		.attributes = attrs,
	};

	vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &attr);
}
"""
GMEM_HELPER = VM_HELPER.replace("vm_ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES,",
                                "gmem_ioctl(fd, KVM_SET_MEMORY_ATTRIBUTES2,")


def tree(tmp_path, helper=VM_HELPER, extra=""):
    kvm = tmp_path / "tools/testing/selftests/kvm"
    (kvm / "x86").mkdir(parents=True)
    (kvm / "include").mkdir()
    (kvm / "include/kvm_util.h").write_text(helper)
    (kvm / "Makefile.kvm").write_text(textwrap.dedent(f"""\
        TEST_GEN_PROGS_COMMON = demand_paging_test
        TEST_GEN_PROGS_COMMON += set_memory_region_test
        TEST_GEN_PROGS_x86 = $(TEST_GEN_PROGS_COMMON)
        TEST_GEN_PROGS_x86 += x86/private_mem_conversions_test
        TEST_GEN_PROGS_x86 += guest_memfd_test {extra}
        TEST_GEN_PROGS_arm64 += arm64/gmem_only_there
        """))
    sources = {
        "demand_paging_test.c": "int main(void) { return 0; }\n",
        "set_memory_region_test.c": "/* KVM_MEM_GUEST_MEMFD */ int main(void) { return 0; }\n",
        "x86/private_mem_conversions_test.c": "int main(void) { vm_mem_set_private(vm, 0, 1); "
                                              "/* guest_memfd */ }\n",
        "guest_memfd_test.c": "int main(void) { /* guest_memfd */ return 0; }\n",
        "guest_memfd_conversions_test.c": "/* guest_memfd */ ioctl(fd, "
                                          "KVM_SET_MEMORY_ATTRIBUTES2, &a);\n",
        "arm64/gmem_only_there.c": "/* guest_memfd */\n",
    }
    for name, text in sources.items():
        (kvm / name).parent.mkdir(parents=True, exist_ok=True)
        (kvm / name).write_text(text)
    return tmp_path


def test_the_guest_memfd_selftests_x86_builds_are_found_in_the_tree(tmp_path):
    found = selftests.discover(tree(tmp_path))
    assert [p.name for p in found] == ["set_memory_region_test",
                                        "x86/private_mem_conversions_test", "guest_memfd_test"]


def test_a_series_own_selftest_is_found_like_the_trees(tmp_path):
    found = selftests.discover(tree(tmp_path, extra="\nTEST_GEN_PROGS_x86 += "
                                    "guest_memfd_conversions_test"))
    assert "guest_memfd_conversions_test" in [p.name for p in found]


def test_a_program_converting_through_the_vm_ioctl_needs_that_route(tmp_path):
    needs = {p.name: p.needs for p in selftests.discover(tree(tmp_path))}
    assert needs["x86/private_mem_conversions_test"] == ("route:vm-attributes",)
    assert needs["guest_memfd_test"] == ()


def test_a_program_converting_in_place_needs_the_gmem_route(tmp_path):
    found = selftests.discover(tree(tmp_path, extra="\nTEST_GEN_PROGS_x86 += "
                                    "guest_memfd_conversions_test"))
    assert {p.name: p.needs for p in found}["guest_memfd_conversions_test"] == ("route:gmem",)


def test_a_library_converting_through_guest_memfd_needs_no_vm_route(tmp_path):
    found = selftests.discover(tree(tmp_path, helper=GMEM_HELPER))
    assert all(p.needs == () for p in found)


def test_a_tree_without_kvm_selftests_has_none(tmp_path):
    assert selftests.discover(tmp_path) == []


def test_a_program_that_does_not_build_is_listed_with_its_error(tmp_path):
    src = tree(tmp_path)
    kvm = src / "tools/testing/selftests/kvm"
    (kvm / "Makefile").write_text("$(OUTPUT)/%: %.c\n\tmkdir -p $(dir $@) && "
                                  "gcc -x c -o $@ $<\n")
    (kvm / "guest_memfd_test.c").write_text("int main(void) { return undeclared; }\n")
    (src / "headers/linux").mkdir(parents=True)
    listing = selftests.build(src, src / "headers", src / "build", Progress(),
                              [kselftest.Program("demand_paging_test"),
                               kselftest.Program("guest_memfd_test")])
    by_name = {p.name: p for p in listing.programs}
    assert by_name["demand_paging_test"].error is None
    assert listing.binary(by_name["demand_paging_test"]).is_file()
    assert "undeclared" in by_name["guest_memfd_test"].error
    assert kselftest.read(listing.root) == listing


def test_a_damaged_listing_is_one_line(tmp_path):
    (tmp_path / kselftest.LISTING).write_text('[{"name": 3}]')
    with pytest.raises(GmemtestError, match="kselftests.json"):
        kselftest.read(tmp_path)


TAP = """\
TAP version 13
1..4
# Starting 4 tests from 1 test cases.
#  RUN           guest_memfd.file_read_write ...
ok 1 guest_memfd.file_read_write
not ok 2 guest_memfd.mmap_supported
ok 3 guest_memfd.hugetlb # SKIP HUGETLB not in KVM_CAP_GUEST_MEMFD_FLAGS
not ok 4 guest_memfd.known # XFAIL waits for a fix
# Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:0
"""


def test_the_programs_tap_lines_say_what_failed_and_what_skipped():
    r = kselftest.parse(1, TAP)
    assert r.failed == ("guest_memfd.mmap_supported",)
    assert r.skipped == ("guest_memfd.hugetlb: HUGETLB not in KVM_CAP_GUEST_MEMFD_FLAGS",)
    assert r.summary == "guest_memfd.mmap_supported"


def test_a_program_without_tap_is_summed_up_by_its_last_line():
    r = kselftest.parse(4, "Random seed: 0x6b8b4567\n1..0 # SKIP - Requirement not met\n")
    assert r.failed == ()
    assert r.summary == "1..0 # SKIP - Requirement not met"
