"""What the suite's tests use beyond the library: conversion routes, the reference model, fault
injection, long-term pins and the pytest plugin; and the constants the scenarios share."""

from gmemtest.kvm import uapi

PAGE = uapi.PAGE_SIZE
GiB = 1 << 30
GPA = 4 * GiB  # where guest memory under test starts (as in the upstream selftests)
PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE
