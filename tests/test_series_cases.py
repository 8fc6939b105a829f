"""The cases of the series' own selftest (x86/guest_memfd_conversions_test.c: SW_PROTECTED VM,
guest_memfd at GPA 4 GiB), written against the contract; forked_accesses and elevated_refcount
are in test_conversion.py."""

import pytest

from gmemtest import Agent
from gmemtest.testing import GPA, PAGE


@pytest.fixture
def agent(gmem_route):
    return Agent(gmem_route.vm)


def test_init_private(gmem_route, agent):
    """init_private: without INIT_SHARED every page starts private: host SIGBUS, guest
    reads zero and its writes stay invisible."""
    mem = gmem_route.memory(1, GPA, 4 * PAGE, private=True)
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(4))
    assert agent.read(GPA) == 0
    assert agent.write(GPA, 7) is None
    assert agent.read(GPA) == 7


def test_init_shared(gmem_route, agent):
    """init_shared: with INIT_SHARED every page starts shared: host and guest see each other's
    writes."""
    mem = gmem_route.memory(1, GPA, 4 * PAGE, private=False)
    mem.view.write(3 * PAGE, b"\x03")
    assert agent.read(GPA + 3 * PAGE) == 3
    assert agent.write(GPA + 2 * PAGE, 2) is None
    assert mem.view.read(2 * PAGE) == b"\x02"


def test_indexing(gmem_route, agent):
    """indexing: converting one of four pages converts exactly that page."""
    mem = gmem_route.memory(1, GPA, 4 * PAGE, private=False)
    for target in range(4):
        gmem_route.to_private(mem, target * PAGE, PAGE)
        assert [mem.view.probe(p * PAGE) for p in range(4)] == \
            ["SIGBUS" if p == target else "ok" for p in range(4)]
        gmem_route.to_shared(mem, target * PAGE, PAGE)


@pytest.mark.parametrize("private", [False, True], ids=["shared", "private"])
def test_before_allocation(gmem_route, agent, private):
    """before_allocation_shared / before_allocation_private: converting pages that were never
    allocated works, and the first access allocates a zeroed page in the new state."""
    mem = gmem_route.memory(1, GPA, 4 * PAGE, private=not private)
    gmem_route.convert(mem, 0, 4 * PAGE, private=private)
    assert agent.read(GPA + PAGE) == 0
    assert mem.view.probe(PAGE) == ("SIGBUS" if private else "ok")


def test_unallocated_folios(gmem_route, agent):
    """unallocated_folios: with 8 pages, some faulted in and some never allocated, a
    whole-file conversion to private and then page-by-page back to shared keeps the faulted
    pages' contents and zero-fills the others."""
    mem = gmem_route.memory(1, GPA, 8 * PAGE, private=False)
    faulted = (0, 3, 5)
    for p in faulted:
        assert agent.write(GPA + p * PAGE, 0x50 + p) is None
    gmem_route.to_private(mem)
    assert all(mem.view.probe(p * PAGE) == "SIGBUS" for p in range(8))
    for p in range(8):
        gmem_route.to_shared(mem, p * PAGE, PAGE)
        assert mem.view.read(p * PAGE) == bytes([0x50 + p if p in faulted else 0])


def test_truncate_keeps_the_attribute(gmem_route, agent):
    """truncate: punching a hole keeps each page's shareability; the pages read zero."""
    mem = gmem_route.memory(1, GPA, 4 * PAGE, private=False)
    mem.view.write(0, b"\xaa" * (2 * PAGE))
    gmem_route.to_private(mem, PAGE, PAGE)
    mem.gmem.punch_hole(0, 2 * PAGE)
    assert mem.view.read(0) == b"\x00"
    assert mem.view.probe(PAGE) == "SIGBUS"
    assert agent.read(GPA + PAGE) == 0
