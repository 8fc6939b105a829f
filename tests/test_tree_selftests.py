"""The kernel tree's own guest_memfd selftests, each program one test beside the suite's.

The host built them with the kernel (gmemtest.vmtier.selftests found them in the tree, a
posted series' own among them) and listed them; each runs as kselftest's runner runs it. A
program that converts through the VM ioctl needs the per-VM route, so a boot with in-place
conversion on skips it, naming that. A program that exits with kselftest's SKIP is a skip with
its own reason (and fails the boot unless that kind of boot may skip it: fail closed); the
cases a passing program skipped are listed in the test's output and in its JUnit properties.
"""

import pytest

from gmemtest.testing import kselftest

LISTING = kselftest.from_env()
PROGRAMS = [pytest.param(p, marks=pytest.mark.needs(*p.needs), id=p.name)
            for p in (LISTING.programs if LISTING is not None else ())] \
    or [pytest.param(None, id="none-listed")]


@pytest.mark.needs("kselftests")
@pytest.mark.parametrize("program", PROGRAMS)
def test_tree_selftest(kvm, program, record_property):
    none = f"${kselftest.ENV} names a listing without programs: the tree has no guest_memfd " \
        "selftest"
    assert LISTING is not None, none
    assert program is not None, none
    assert program.error is None, f"{program.name} {program.error}"
    result = kselftest.run(LISTING.binary(program))
    print(result.output[-8000:])
    for case in result.skipped:
        record_property("kselftest_skip", case)
    if result.status == kselftest.KSFT_SKIP:
        pytest.skip(f"kselftest SKIP: {program.name}: {result.summary}")
    said = f"{program.name} exited {result.status}: {result.summary}"
    assert result.status == kselftest.KSFT_PASS, said
    assert not result.failed, said
