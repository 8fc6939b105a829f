"""Conversions racing guest accesses: vCPU threads read and write their own qword of each page
while another thread converts ranges of those pages back and forth.

Checked: no guest ever reads data from the wrong backing, and no access exits other than with
KVM_EXIT_MEMORY_FAULT. That one is expected: for a SW_PROTECTED VM, x86's page fault handler
samples the gfn's attribute when the fault starts and re-checks it once the fault holds
mmu_invalidate_seq (arch/x86/kvm/mmu/mmu.c, "private vs. shared mismatch"); a conversion landing
in between makes KVM exit to the VMM, which re-enters because it made the conversion itself.

For each page the converter keeps a generation that is odd while a conversion of the page is in
flight; an access that saw the same even generation before and after it knows the page's state
and so which backing it reached (vm-attributes: guest_memfd when private, the userspace page
when shared; gmem: the one guest_memfd page in both states).
"""

from __future__ import annotations

import os
import random
import threading

from gmemtest import Agent, MemoryFault
from gmemtest.errors import ConversionError
from gmemtest.kvm.exits import Exit
from gmemtest.testing import GPA, PAGE

PAGES = 32
VCPUS = 2
SECONDS = float(os.environ.get("GMEMTEST_STRESS_SECONDS", "3"))
# A racing conversion explains one mismatch exit at a time; an access that keeps exiting
# this often has a page the kernel cannot serve.
MAX_REENTRIES = 100


class Pages:
    """The converter's record of each page: state and generation."""

    def __init__(self) -> None:
        self.private = [False] * PAGES
        self.gen = [0] * PAGES
        self.lock = threading.Lock()

    def snapshot(self, page: int) -> tuple[int, bool]:
        with self.lock:
            return self.gen[page], self.private[page]

    def begin(self, first: int, count: int) -> None:
        with self.lock:
            for p in range(first, first + count):
                self.gen[p] += 1

    def end(self, first: int, count: int, private: bool) -> None:
        with self.lock:
            for p in range(first, first + count):
                self.private[p] = private
                self.gen[p] += 1


def test_conversions_race_guest_accesses(route, tally):
    """Seed 'Advantage 1' (one source of truth, no stale state) under concurrency; contract
    'Conversion' (KVM's mappings of a converting range are zapped and faults retry; contents
    survive in place). Bounded by GMEMTEST_STRESS_SECONDS (default 3)."""
    seed = int(os.environ.get("GMEMTEST_SEED", "1"))
    first = Agent(route.vm)
    agents = [first] + [first.sibling() for _ in range(VCPUS - 1)]
    mem = route.memory(1, GPA, PAGES * PAGE, private=False)
    pages = Pages()
    in_place = route.name == "gmem"
    stop = threading.Event()
    problems: list[str] = []
    counts = {"conversions": 0, "eagain": 0, "accesses": 0, "checked": 0, "memory_faults": 0}
    count_lock = threading.Lock()

    def problem(text: str) -> None:
        problems.append(text)
        stop.set()

    def converter() -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            first_page = rng.randrange(PAGES)
            count = min(rng.choice((1, 1, 2, PAGES)), PAGES - first_page)
            private = rng.random() < 0.5
            pages.begin(first_page, count)
            while True:
                try:
                    route.convert(mem, first_page * PAGE, count * PAGE, private=private)
                    break
                except ConversionError as e:
                    if e.errno_name != "EAGAIN":  # a vCPU's fault holds a transient reference
                        problem(f"conversion failed: {e}")
                        return
                    counts["eagain"] += 1
            pages.end(first_page, count, private)
            counts["conversions"] += 1

    def finish(agent: Agent, result: int | Exit | None, page: int,
               gen0: int) -> int | Exit | None:
        """Re-enter after the mismatch exits a racing conversion causes (see above): each
        one must have a conversion of the page to answer for it (its generation moved since
        the access began or the last exit), and the access must complete, also once time is
        up (the converter stops, so nothing can race it any more)."""
        seen = gen0
        for _ in range(MAX_REENTRIES):
            if not isinstance(result, MemoryFault):
                return result
            gen, _ = pages.snapshot(page)
            if gen == seen and gen % 2 == 0:
                problem(f"page {page}: {result} with no conversion of the page racing it")
                return result
            seen = gen
            with count_lock:
                counts["memory_faults"] += 1
            result = agent.resume()
        problem(f"page {page}: still {result} after {MAX_REENTRIES} re-entries")
        return result

    def vcpu(index: int, agent: Agent) -> None:
        rng = random.Random(seed * 1000 + index)
        # expected[page][state]: what this vCPU's qword holds in that backing (None: unknown,
        # because a write raced a conversion and may have landed in either).
        expected: list[dict[bool, int | None]] = [{False: 0, True: 0} for _ in range(PAGES)]
        value = index << 32
        while not stop.is_set():
            page = rng.randrange(PAGES)
            gpa = GPA + page * PAGE + index * 8
            gen0, private = pages.snapshot(page)
            if rng.random() < 0.5:
                value += 1
                result = finish(agent, agent.write(gpa, value, width=8), page, gen0)
                gen1, _ = pages.snapshot(page)
                if problems:
                    break
                if isinstance(result, Exit):
                    problem(f"vCPU {index}: write to {gpa:#x} exited: {result}")
                    break
                if gen0 == gen1 and gen0 % 2 == 0:
                    expected[page][private] = value
                    if in_place:
                        expected[page][not private] = value
                else:
                    expected[page] = {False: None, True: None}
            else:
                got = finish(agent, agent.read(gpa, width=8), page, gen0)
                gen1, _ = pages.snapshot(page)
                if problems:
                    break
                if not isinstance(got, int):
                    problem(f"vCPU {index}: read of {gpa:#x} exited: {got}")
                    break
                want = expected[page][private]
                if gen0 == gen1 and gen0 % 2 == 0 and want is not None:
                    with count_lock:
                        counts["checked"] += 1
                    if got != want:
                        backing = "the page" if in_place else \
                            ("guest_memfd" if private else "the shared page")
                        state = "private" if private else "shared"
                        problem(f"vCPU {index}: page {page} ({state}) read {got:#x}, "
                                f"expected {want:#x} from {backing}")
                        break
            with count_lock:
                counts["accesses"] += 1

    threads = [threading.Thread(target=converter)]
    threads += [threading.Thread(target=vcpu, args=(i, a)) for i, a in enumerate(agents)]
    for t in threads:
        t.start()
    stop.wait(SECONDS)  # or less, when a thread found a problem
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (a vCPU in KVM_RUN?)"
    tally(seed=seed, seconds=SECONDS, problems=len(problems), **counts)
    assert not problems, problems[0]
    assert counts["conversions"] > 0, counts
    assert counts["checked"] > 0, counts
