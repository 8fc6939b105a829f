"""Closing a guest_memfd whose shareability record is split page by page.

guest_memfd records which pages are shared in a maple tree created with MT_FLAGS_USE_RCU and
without MT_FLAGS_ALLOC_RANGE. Converting every other page of a large file splits the record into
an entry per page, a tree of many maple_range_64 nodes. Destroying such a tree in RCU mode, when
the file is closed, walks a range node's metadata as if it were a child and oopses on a base
without "maple_tree: fix maple_range_64 crashes in RCU mode", unless guest_memfd takes the tree
out of RCU mode (mt_clear_in_rcu()) before mtree_destroy().

Convert every other page of a 64 MiB guest_memfd to private, one page at a time, check every
page from the guest and the host, and close the VM and the file.
"""
from gmemtest.testing.model import Scenario

with Scenario.open("gmem", 16384) as s:
    s.split(0, 16384, private=True)
    s.verify()
    s.check_health()
