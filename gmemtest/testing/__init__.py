"""What the suite's tests use beyond the library: conversion routes, the reference model, fault
injection, long-term pins and the pytest plugin; and the constants the scenarios share."""

from gmemtest.kvm import uapi

PAGE = uapi.PAGE_SIZE
GiB = 1 << 30
GPA = 4 * GiB  # where guest memory under test starts (as in the upstream selftests)
PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE

# What tells the suite about the kernel under test (the plugin's options say the same): the
# conversion capability's number, its uapi headers, and a revision whose rules to expect.
ENV_CAP = "GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
ENV_HEADERS = "GMEMTEST_KERNEL_HEADERS"
ENV_REVISION = "GMEMTEST_REVISION"
# In the guest: "1" runs the harness's own tests (the one boot that checks gmemtest itself on
# a kernel that can convert), instead of the kernel's.
ENV_HARNESS = "GMEMTEST_HARNESS"

# A boot's limits for some of its tests (node id -> seconds, JSON), in its results share: the
# guest's plugin marks each of those tests with its own pytest-timeout.
TEST_LIMITS = "test-limits.json"

# How the guest's pytest loads plugins. Autoload is off there (PYTEST_DISABLE_PLUGIN_AUTOLOAD):
# finding the installed ones through entry points, and importing those it does not use, costs
# a second under TCG. It loads these, and leaves out pytest's own plugins the suite has no use
# for (doctests, tmpdir, pdb on a console with no input, pastebin): 0.15 s per process there.
GUEST_PYTEST_PLUGINS = ("-p", "gmemtest.testing.plugin", "-p", "pytest_timeout",
                        "-p", "no:cacheprovider", "-p", "no:doctest", "-p", "no:legacypath",
                        "-p", "no:debugging", "-p", "no:pastebin")
