"""A reference model of guest memory under conversion, and a scenario that applies the same
operations to a real VM and checks after each one that the kernel agrees with the model.

Beyond conversions and accesses, the model knows long-term pins (a pinned shared page makes a
conversion to private that would change it fail with EAGAIN at that page, changing nothing)
and injected allocation failures (failslab: a conversion fails with ENOMEM at the range's start
and changes nothing, or completes; one that changes no page allocates nothing and cannot fail).

Host accesses go through /proc/self/mem (:meth:`Mapping.peek`): the same fault handler as a
touch, with a failed read where a touch would get SIGBUS, so a wrong model cannot kill the
process. The model holds, per page: private or shared, and the byte at the page's start in
each backing (vm-attributes: guest_memfd for private, the userspace page for shared; gmem: one
guest_memfd page for both). Every operation is a method of :class:`Scenario` and is logged as
the Python line that repeats it, so any sequence replays on its own::

    with Scenario.open("gmem") as s:
        s.convert(0, 2, private=True)
        s.host_read(1)              # raises Disagreement when the kernel disagrees
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gmemtest.errors import ConversionError, KvmError
from gmemtest.guest.agent import Agent
from gmemtest.kvm import uapi
from gmemtest.kvm.exits import MemoryFault, Mmio
from gmemtest.kvm.kvm import Kvm
from gmemtest.kvm.vm import Vm
from gmemtest.results import health

from . import GPA, PAGE, gup
from .faultinject import Injector
from .routes import ROUTES, ConversionRoute, GuestMemory

SLOT = 1
PAGES = 8
FAIL_TIMES = 4  # allocations failslab fails in an injected conversion (retries fail too)


class Disagreement(AssertionError):
    """The kernel did something the model says it must not."""


@dataclass
class Page:
    private: bool = False
    shared: int = 0  # byte 0 of the shared backing (gmem: of the one page)
    private_data: int = 0  # byte 0 of guest_memfd (vm-attributes only)


class Model:
    """What the kernel must show for ``pages`` pages converted in place (``in_place``: the gmem
    route, one guest_memfd page per page) or through per-VM attributes (a shared and a private
    backing per page). It touches no kernel: a Scenario checks the kernel against it, and the
    C selftest writer (gmemtest.testing.selftest_writer) turns it into assertions."""

    def __init__(self, pages: int, in_place: bool) -> None:
        self.pages = [Page() for _ in range(pages)]
        self.in_place = in_place
        self.pinned: int | None = None  # the pinned page, while it is still the file's

    def expect_byte(self, page: int) -> int:
        p = self.pages[page]
        return p.private_data if p.private and not self.in_place else p.shared

    def host_blocked(self, page: int) -> bool:
        """The host's view of a private page is gone only when converting in place."""
        return self.in_place and self.pages[page].private

    def host_view(self, page: int) -> int | None:
        """Byte 0 of ``page`` as the host's view shows it; None where the kernel refuses it."""
        return None if self.host_blocked(page) else self.pages[page].shared

    def blocker(self, first: int, count: int, private: bool) -> int | None:
        """The pinned page that must make this conversion fail, if any."""
        p = self.pinned
        if private and p is not None and first <= p < first + count and \
                not self.pages[p].private:
            return p
        return None

    def converted(self, first: int, count: int, private: bool) -> None:
        for p in self.pages[first:first + count]:
            p.private = private

    def guest_wrote(self, page: int, value: int) -> None:
        p = self.pages[page]
        if p.private and not self.in_place:
            p.private_data = value
        else:
            p.shared = value

    def punched(self, first: int, count: int) -> None:
        """A hole punched in guest_memfd: those pages read zero there (both states in place;
        only the private backing otherwise); shareability is unchanged."""
        if self.pinned is not None and first <= self.pinned < first + count:
            self.pinned = None  # the pinned page left the file; the pin holds it still
        for p in self.pages[first:first + count]:
            if self.in_place:
                p.shared = 0
            else:
                p.private_data = 0

    def memslot_exit(self, page: int) -> type[MemoryFault] | type[Mmio]:
        """How a guest access to ``page`` exits while no memslot binds it: in place, MMIO (the
        gfn has no memslot); otherwise MEMORY_FAULT when private, MMIO when shared."""
        return MemoryFault if self.pages[page].private and not self.in_place else Mmio

    def state(self, page: int) -> str:
        return "private" if self.pages[page].private else "shared"


class Scenario:
    """One SW_PROTECTED VM with PAGES pages of guest memory at GPA, converted through ``route``,
    and the model of those pages."""

    def __init__(self, kvm: Kvm, vm: Vm, route: ConversionRoute, pages: int = PAGES) -> None:
        self.kvm, self.vm, self.route = kvm, vm, route
        self.agent = Agent(vm)
        self.mem: GuestMemory = route.memory(SLOT, GPA, pages * PAGE, private=False)
        self.in_place = route.name == "gmem"
        self.model = Model(pages, self.in_place)
        self.log: list[str] = []
        self.counts: Counter[str] = Counter()
        self.kmsg = health.KmsgTail()
        self.pin_held: gup.LongTermPin | None = None

    @property
    def pages(self) -> list[Page]:
        return self.model.pages

    def reset(self) -> None:
        """Start over on the same VM and vCPU: a new guest_memfd and memslot, all shared,
        an empty log (the counts go on)."""
        old = self.mem
        self._drop_pin()
        if self.vm.memslots.get(SLOT) is old.slot:  # a failed memslot_cycle may have left none
            old.slot.delete()
        if not self.in_place:
            self.vm.set_memory_attributes(GPA, old.size, 0)
        old.gmem.close()  # its mapping stays with the retired memslot until the VM closes
        self.mem = self.route.memory(SLOT, GPA, old.size, private=False)
        if self.agent.pending is not None:  # an access a failed step left stuck
            if not isinstance(self.agent.resume(), int):
                raise Disagreement(f"reset: the agent's access is still stuck: "
                                   f"{self.agent.pending}")
        self.model = Model(len(self.pages), self.in_place)
        self.log = []
        self.counts["examples"] += 1

    @classmethod
    def open(cls, route_name: str, pages: int = PAGES) -> Scenario:
        kvm = Kvm()
        try:
            vm = kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM)
            return cls(kvm, vm, ROUTES[route_name](vm), pages)
        except BaseException:
            kvm.close()
            raise

    def close(self) -> None:
        self._drop_pin()
        self.kmsg.close()
        self.vm.close()
        self.kvm.close()

    def __enter__(self) -> Scenario:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers --------------------------------------------------------------------------

    def _step(self, line: str, kind: str) -> None:
        self.log.append(line)
        self.counts["steps"] += 1
        self.counts[kind] += 1

    def _fail(self, what: str) -> None:
        raise Disagreement(f"after {len(self.log)} steps ({self.route.name} route): {what}")


    # --- operations -----------------------------------------------------------------------

    def _drop_pin(self) -> None:
        if self.pin_held is not None:
            self.pin_held.stop()
        self.pin_held, self.model.pinned = None, None

    def convert(self, first: int, count: int, *, private: bool) -> None:
        """Convert pages [first, first + count): EAGAIN at a pinned page that would change
        (nothing changes), else done."""
        self._step(f"s.convert({first}, {count}, private={private})", "conversions")
        blocker = self.model.blocker(first, count, private)
        try:
            self.route.convert(self.mem, first * PAGE, count * PAGE, private=private)
        except ConversionError as e:
            want = self.mem.slot.gmem_offset + (blocker or 0) * PAGE
            if blocker is None or e.errno_name != "EAGAIN" or e.error_offset != want:
                self._fail(f"convert({first}, {count}, private={private}): {e}; expected "
                           + ("success" if blocker is None else f"EAGAIN at page {blocker}"))
            self.counts["refused_pinned"] += 1
            return
        if blocker is not None:
            self._fail(f"convert({first}, {count}, private={private}) succeeded with page "
                       f"{blocker} pinned")
        self.model.converted(first, count, private)

    def split(self, first: int, count: int, *, private: bool) -> None:
        """Convert every other page of [first, first + count), one conversion per page:
        guest_memfd's record of shareability splits into an entry per page."""
        self._step(f"s.split({first}, {count}, private={private})", "splits")
        for page in range(first, first + count, 2):
            self.route.convert(self.mem, page * PAGE, PAGE, private=private)
            self.model.converted(page, 1, private)

    def convert_failing(self, first: int, count: int, *, private: bool, space: int) -> None:
        """Convert pages [first, first + count) while failslab fails the slab allocations past
        ``space`` bytes (FAIL_TIMES of them): ENOMEM at the range's start with nothing changed, or
        done; a conversion that changes no page allocates nothing and must succeed."""
        self._step(f"s.convert_failing({first}, {count}, private={private}, space={space})",
                   "injected_conversions")
        noop = all(p.private == private for p in self.pages[first:first + count])
        error: KvmError | None = None
        with Injector("failslab", space=space, times=FAIL_TIMES) as inj:
            try:
                self.route.convert(self.mem, first * PAGE, count * PAGE, private=private)
            except KvmError as e:
                error = e
        self.counts["injected_faults"] += inj.injected
        what = f"convert_failing({first}, {count}, private={private}, space={space})"
        if noop and (error is not None or inj.injected):
            self._fail(f"{what} changes no page, yet it allocated: {error or inj.injected}")
        if error is None:
            self.model.converted(first, count, private)
            return
        if error.errno_name != "ENOMEM" or not inj.injected:
            self._fail(f"{what}: {error} with {inj.injected} injected failure(s)")
        want = self.mem.slot.gmem_offset + first * PAGE
        if self.in_place and isinstance(error, ConversionError) and error.error_offset != want:
            self._fail(f"{what}: error_offset {error.error_offset:#x}, expected {want:#x}")
        self.counts["failed_conversions"] += 1

    def pin(self, page: int) -> None:
        """Pin shared ``page`` (a long-term GUP pin through the host's view of guest_memfd)
        until :meth:`unpin`; one pin at a time."""
        self._step(f"s.pin({page})", "pins")
        if self.pin_held is not None or self.pages[page].private or not self.in_place:
            raise ValueError(f"pin({page}): needs a shared page of guest_memfd and no pin held")
        self.pin_held = gup.LongTermPin(self.mem.view.addr + page * PAGE, PAGE)
        self.pin_held.start()
        self.model.pinned = page

    def unpin(self) -> None:
        self._step("s.unpin()", "unpins")
        self._drop_pin()

    def host_write(self, page: int, value: int) -> None:
        """Write byte 0 of ``page`` through the host's shared view; refused (SIGBUS for a
        touch) on a private page converted in place."""
        self._step(f"s.host_write({page}, {value:#x})", "host_accesses")
        written = self.mem.view.poke(page * PAGE, bytes([value]))
        if written == self.model.host_blocked(page):
            self._fail(f"host write to page {page} ({self.model.state(page)}) "
                       f"{'succeeded' if written else 'was refused'}")
        if written:
            self.pages[page].shared = value

    def host_read(self, page: int) -> None:
        """Read byte 0 of ``page`` through the host's view (refused when blocked)."""
        self._step(f"s.host_read({page})", "host_accesses")
        self._check_host(page)

    def _check_host(self, page: int) -> None:
        got = self.mem.view.peek(page * PAGE)
        want = self.model.host_view(page)
        if (got is None) != (want is None):
            self._fail(f"host read of page {page} ({self.model.state(page)}) "
                       f"{'was refused' if got is None else 'succeeded'}")
        if got is not None and got[0] != want:
            self._fail(f"host read of page {page} ({self.model.state(page)}): {got[0]:#x}, "
                       f"expected {want:#x}")

    def guest_write(self, page: int, value: int) -> None:
        """The guest writes byte 0 of ``page``: to the backing of the page's state."""
        self._step(f"s.guest_write({page}, {value:#x})", "guest_accesses")
        result = self.agent.write(GPA + page * PAGE, value)
        if result is not None:
            self._fail(f"guest write to page {page} ({self.model.state(page)}) exited: {result}")
        self.model.guest_wrote(page, value)

    def guest_read(self, page: int) -> None:
        self._step(f"s.guest_read({page})", "guest_accesses")
        self._check_guest_read(page, self.agent.read(GPA + page * PAGE))

    def _check_guest_read(self, page: int, got: object) -> None:
        want = self.model.expect_byte(page)
        if got != want:
            self._fail(f"guest read of page {page} ({self.model.state(page)}): {got}, "
                       f"expected {want:#x}")

    def punch(self, first: int, count: int) -> None:
        """Punch a hole in guest_memfd over the pages: they read back as zero there (both states
        in place; only the private backing otherwise); shareability is unchanged."""
        self._step(f"s.punch({first}, {count})", "punches")
        self.mem.gmem.punch_hole(self.mem.slot.gmem_offset + first * PAGE, count * PAGE)
        self.model.punched(first, count)

    def pre_fault(self, first: int, count: int) -> None:
        """KVM_PRE_FAULT_MEMORY over the pages: maps them, changes no content."""
        self._step(f"s.pre_fault({first}, {count})", "pre_faults")
        self.agent.vcpu.pre_fault(GPA + first * PAGE, count * PAGE)

    def memslot_cycle(self, page: int) -> None:
        """Delete the memslot; a guest read of ``page`` exits (in place: MMIO, the gfn has no
        memslot; otherwise MEMORY_FAULT when private, MMIO when shared); re-add the memslot
        as it was and let the read complete: attributes and contents are as before."""
        self._step(f"s.memslot_cycle({page})", "memslot_cycles")
        old = self.mem.slot
        old.delete()
        exit = self.agent.read(GPA + page * PAGE)
        want = self.model.memslot_exit(page)
        if not isinstance(exit, want):
            self._fail(f"guest read of page {page} ({self.model.state(page)}) with no memslot: "
                       f"{exit}, expected {want.__name__}")
        if isinstance(exit, MemoryFault) and (exit.gpa, exit.private) != \
                (GPA + page * PAGE, True):
            self._fail(f"memory fault for page {page}: {exit}")
        self.mem.slot = self.vm.add_memslot(SLOT, old.gpa, old.size,
                                            userspace_addr=old.userspace_addr, gmem=old.gmem,
                                            gmem_offset=old.gmem_offset)
        # A MEMORY_FAULT read retries and now reaches memory; an MMIO read completes with
        # whatever run->mmio.data holds. Either way, read the page again to see the memory.
        self.agent.resume()
        self._check_guest_read(page, self.agent.read(GPA + page * PAGE))

    def verify(self) -> None:
        """Every page, through the guest and the host, agrees with the model."""
        self._step("s.verify()", "verifications")
        for page in range(len(self.pages)):
            self._check_guest_read(page, self.agent.read(GPA + page * PAGE))
            self._check_host(page)

    def check_health(self) -> None:
        """No kernel report was logged since the last check."""
        found = self.kmsg.findings()
        if found:
            self._fail(f"kernel health: {found[0]}")

    def reproducer(self, note: str = "") -> str:
        """A script that replays this scenario's steps on its own."""
        cls = type(self)
        where = [] if cls.__module__.startswith("gmemtest.") else \
            ["import sys", "", f"sys.path.insert(0, {str(Path(inspect.getfile(cls)).parent)!r})"]
        lines = ["#!/usr/bin/env python3",
                 f'"""gmemtest model reproducer: {self.route.name} route, {len(self.log)} steps.',
                 *([note] if note else []),
                 'Run it with the gmemtest venv on the kernel under test."""',
                 *where,
                 f"from {cls.__module__} import {cls.__name__} as Scenario  # noqa: E402", "",
                 f"with Scenario.open({self.route.name!r}, {len(self.pages)}) as s:",
                 *(f"    {line}" for line in self.log),
                 "    s.verify()",
                 "    s.check_health()",
                 'print("the kernel agreed with the model")']
        return "\n".join(lines) + "\n"
