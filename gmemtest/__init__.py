"""gmemtest: test KVM guest_memfd shared/private conversion on real kernels.

The package is layered, each layer a folder that imports only from the layers below it
(checked by `make lint`, the import-linter contract in pyproject.toml):

- ``kvm/``: the uAPI described once, the raw ioctl layer and the object graph (Kvm, Vm,
  Memslot, GuestMemfd, Vcpu, Stats, typed exits);
- ``guest/``: the guest agent and its assembly source;
- ``results/``: outcomes, kernel health, run reports, KTAP and JUnit, renderers;
- ``testing/``: what tests use: conversion routes, the reference model, fault injection, long-term
  pins, and the pytest plugin;
- ``vmtier/``: the kernel (fetch, patch, configure, build), the root image and QEMU;
- ``workflows/``: the main job, bisect steps, the matrix and the benchmarks;
- top level: the CLI, ``caps``, ``abi``, and the errors and cache every layer shares.
"""

from .errors import ConversionError, GmemtestError, KvmError, VmKilled
from .guest.agent import Agent
from .kvm.exits import (
    Exit,
    FailEntry,
    Hlt,
    Hypercall,
    InternalError,
    Io,
    MemoryFault,
    Mmio,
    Shutdown,
    Unknown,
)
from .kvm.gmem import GuestMemfd
from .kvm.kvm import Kvm
from .kvm.stats import Stats
from .kvm.vcpu import Vcpu
from .kvm.vm import Memslot, Vm

__all__ = [
    "Agent", "ConversionError", "Exit", "FailEntry", "GmemtestError", "GuestMemfd", "Hlt",
    "Hypercall", "InternalError", "Io", "Kvm", "KvmError", "MemoryFault", "Memslot", "Mmio",
    "Shutdown", "Stats", "Unknown", "Vcpu", "Vm", "VmKilled",
]
__version__ = "0.1.0"
