"""gmemtest: test KVM guest_memfd shared/private conversion on real kernels."""

from .agent import Agent
from .errors import ConversionError, GmemtestError, KvmError
from .exits import (
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
from .gmem import GuestMemfd
from .kvm import Kvm
from .stats import Stats
from .vcpu import Vcpu
from .vm import Memslot, Vm

__all__ = [
    "Agent", "ConversionError", "Exit", "FailEntry", "GmemtestError", "GuestMemfd", "Hlt",
    "Hypercall", "InternalError", "Io", "Kvm", "KvmError", "MemoryFault", "Memslot", "Mmio",
    "Shutdown", "Stats", "Unknown", "Vcpu", "Vm",
]
__version__ = "0.1.0"
