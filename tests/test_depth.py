"""Conversions deep into large ranges. The kernel walks a range's folios in batches (a
folio_batch holds 31) and its state in runs; a bug that looks only at the first batch, the
first run or the first folio passes every test that stays in the first few pages of a small
file. These put busy pages far into a 256-page range and in several places at once, and
convert ranges that span many batches and runs, checking every page."""

from __future__ import annotations

import contextlib
import os

import pytest

from gmemtest import Agent, ConversionError
from gmemtest.testing import GPA, PAGE, gup

PAGES = 256  # eight folio batches of 4K folios
FAR = (40, 130, 200)  # past the first batch, in the fifth and in the seventh


def marked(route, pages=PAGES, *, private=False):
    """A memslot of ``pages`` pages at GPA whose page p holds the byte p (low 8 bits)."""
    mem = route.memory(1, GPA, pages * PAGE, private=private)
    agent = Agent(route.vm)
    for p in range(pages):
        assert agent.write(GPA + p * PAGE, p & 0xFF) is None
    return mem, agent


def states(mem, pages=PAGES) -> list[str]:
    """Each page as the host sees it: "private" where /proc/self/mem cannot fault it in."""
    return ["private" if mem.view.peek(p * PAGE) is None else "shared" for p in range(pages)]


def contents_kept(mem, agent, pages=PAGES) -> None:
    for p in range(pages):
        assert agent.read(GPA + p * PAGE) == p & 0xFF, f"page {p}"
        got = mem.view.peek(p * PAGE)
        assert got in (None, bytes([p & 0xFF])), f"page {p} reads {got!r} on the host"


@contextlib.contextmanager
def spliced(view, page: int):
    """Page ``page`` held by a pipe (vmsplice): an extra reference until the pipe goes."""
    r, w = os.pipe()
    try:
        assert view.splice_into(w, page * PAGE) == PAGE
        yield
    finally:
        os.close(r)
        os.close(w)


def refused_at(gmem, size: int, page: int) -> None:
    with pytest.raises(ConversionError) as e:
        gmem.to_private(0, size)
    assert e.value.errno_name == "EAGAIN", e.value
    assert e.value.error_offset == page * PAGE, \
        f"error_offset {e.value.error_offset // PAGE} is not the first busy page {page}"


@pytest.mark.needs("gup_test")
def test_busy_pages_far_into_the_range_and_in_several_places(sw_vm, gmem_route):
    """Contract: EAGAIN 'with error_offset = the byte offset of the first such page'. Three
    pages far into a 256-page file hold extra references at once (two in pipes, the last with
    a long-term pin): the conversion of the whole file names the first, changes nothing (every
    page stays shared, with its byte), and as each is let go names the next; with none left
    the whole file converts and keeps its contents."""
    mem, agent = marked(gmem_route)
    with contextlib.ExitStack() as held:
        released = [held.enter_context(contextlib.ExitStack()) for _ in FAR]
        released[0].enter_context(spliced(mem.view, FAR[0]))
        released[1].enter_context(spliced(mem.view, FAR[1]))
        released[2].enter_context(gup.long_term_pin(mem.view.addr + FAR[2] * PAGE, PAGE))
        for i, page in enumerate(FAR):
            refused_at(mem.gmem, PAGES * PAGE, page)
            assert states(mem) == ["shared"] * PAGES, f"a refused conversion changed pages ({i})"
            contents_kept(mem, agent)
            released[i].close()
        mem.gmem.to_private()
        assert states(mem) == ["private"] * PAGES
    mem.gmem.to_shared()
    contents_kept(mem, agent)
    assert states(mem) == ["shared"] * PAGES


@pytest.mark.needs("gup_test")
def test_several_pinned_pages_ahead_of_other_references(sw_vm, gmem_route):
    """Contract: EAGAIN 'with error_offset = the byte offset of the first such page', pins
    and other references alike. One long-term pin over three pages far into the file, ahead
    of two pages held by pipes: the conversion of the whole file names the first pinned page
    (not a later pinned one, nor a page with another kind of reference); one that starts at
    the second pinned page names that one; one that starts past the pins names the first pipe
    page. None changes a page; once all are let go the file converts whole."""
    mem, agent = marked(gmem_route)
    pinned = FAR[0]
    with spliced(mem.view, FAR[1]), spliced(mem.view, FAR[2]), \
            gup.long_term_pin(mem.view.addr + pinned * PAGE, 3 * PAGE):
        refused_at(mem.gmem, PAGES * PAGE, pinned)
        for start, first_busy in ((pinned + 1, pinned + 1), (pinned + 3, FAR[1])):
            with pytest.raises(ConversionError) as e:
                mem.gmem.to_private(start * PAGE, (PAGES - start) * PAGE)
            assert (e.value.errno_name, e.value.error_offset) == ("EAGAIN", first_busy * PAGE)
        assert states(mem) == ["shared"] * PAGES
        contents_kept(mem, agent)
    mem.gmem.to_private()
    assert states(mem) == ["private"] * PAGES
    contents_kept(mem, agent)


def test_busy_page_in_a_later_run_of_a_long_mixed_range(sw_vm, gmem_route):
    """Runs of three pages alternating shared and private over 256 pages, a busy page in the
    run after the 60th: a to-private conversion of everything fails there and leaves every run
    as it was."""
    mem, agent = marked(gmem_route)
    for start in range(3, PAGES, 6):
        mem.gmem.to_private(start * PAGE, min(3, PAGES - start) * PAGE)
    before = states(mem)
    assert before.count("private") == sum(min(3, PAGES - s) for s in range(3, PAGES, 6))
    busy = 6 * 30 + 1  # a shared run far in
    assert before[busy] == "shared"
    with spliced(mem.view, busy):
        refused_at(mem.gmem, PAGES * PAGE, busy)
        assert states(mem) == before
    contents_kept(mem, agent)
    mem.gmem.to_private()
    assert states(mem) == ["private"] * PAGES


@pytest.mark.needs("KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_BINARY_STATS_FD")
@pytest.mark.parametrize("private", [True, False], ids=["to-private", "to-shared"])
def test_conversion_across_many_batches_reaches_every_page(route, private):
    """A conversion of 256 pages, all in the other state and all mapped by KVM, changes and
    unmaps every one of them: the host sees each page's new state, KVM's 4K mappings all go,
    the guest reads every page's byte, and the conversion back does the same."""
    mem, agent = marked(route, private=not private)
    vcpu = agent.vcpu
    stats = route.vm.stats()
    vcpu.pre_fault(GPA, PAGES * PAGE)
    mapped = stats["pages_4k"]
    route.convert(mem, 0, PAGES * PAGE, private=private)
    assert mapped - stats["pages_4k"] == PAGES, "a conversion left mappings of changed pages"
    if route.name == "gmem":
        assert states(mem) == [("private" if private else "shared")] * PAGES
        contents_kept(mem, agent)
    route.convert(mem, 0, PAGES * PAGE, private=not private)
    if route.name == "gmem":
        assert states(mem) == [("shared" if private else "private")] * PAGES
        contents_kept(mem, agent)


def test_route_of_every_page_after_many_runs(sw_vm, gmem_route):
    """Alternating single pages converted one by one over 256 pages, then the whole range
    converted to shared at once: each of the 128 runs is found."""
    mem, agent = marked(gmem_route)
    for p in range(1, PAGES, 2):
        mem.gmem.to_private(p * PAGE, PAGE)
    assert states(mem) == ["shared", "private"] * (PAGES // 2)
    mem.gmem.to_shared()
    assert states(mem) == ["shared"] * PAGES
    contents_kept(mem, agent)
