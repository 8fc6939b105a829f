"""A private page is unreachable after its memslot comes back.

A guest read of a gfn whose memslot was deleted exits to userspace as MMIO, and KVM caches that
answer in an MMIO SPTE. When userspace adds the memslot back, the gfn is private, but the fault
on the stale MMIO SPTE is classified from the SPTE, as shared, instead of from guest_memfd's
attributes: the guest's read of its private page exits with KVM_EXIT_MEMORY_FAULT (shared) on
every retry, and the guest never reaches its page.

Convert a page to private in place, let the guest write it, delete the memslot, let the guest's
read of the page exit as MMIO, add the memslot back as it was: the guest must read back what it
wrote. gmemtest's model fuzzer found this sequence.
"""
from gmemtest.testing.model import Scenario

with Scenario.open("gmem", 4) as s:
    s.convert(1, 1, private=True)
    s.guest_write(1, 0x5a)
    s.memslot_cycle(1)
    s.verify()
    s.check_health()
