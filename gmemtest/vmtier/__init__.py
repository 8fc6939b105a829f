"""The VM tier: the kernel under test (Debian's source or a tree, patched, configured from
kconfigs/ and built), the guest's root, and QEMU booting it to run the suite inside."""
