"""The guest agent: a vCPU the host drives one memory access at a time.

The agent (guest/agent.s) runs in 64-bit mode in a small memslot of its own at GPA 0, with
identity page tables covering the first :data:`IDENTITY_LIMIT` bytes of guest physical memory, so
tests can place memory anywhere below that (the upstream tests use 4 GiB). Each request is one
KVM_RUN: the agent reports completion with a port write; when the access exits instead
(KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, a hypercall), the request returns that exit and the next
:meth:`Agent.resume` retries or completes the instruction::

    agent = Agent(vm)
    agent.write(gpa, 0x42)          # None, or the Exit that happened instead
    assert agent.read(gpa) == 0x42  # the value, or the Exit
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from gmemtest.errors import GmemtestError
from gmemtest.kvm import uapi
from gmemtest.kvm.exits import Exit, Io

from . import assembler

if TYPE_CHECKING:
    from gmemtest.kvm.memory import Mapping
    from gmemtest.kvm.vcpu import Vcpu
    from gmemtest.kvm.vm import Memslot, Vm

AGENT_SLOT = 0
AGENT_GPA = 0
AGENT_SIZE = 1 << 20  # the agent owns GPAs [0, 1 MiB): place test memory above
AGENT_PORT = 0x4D47  # "GM"; mirrored in guest/agent.s

# Layout of the agent's memslot (offsets from AGENT_GPA).
GDT = 0x0000
MAILBOX = 0x1000
TSS = 0x2000
CODE = 0x3000
STACK_TOP = 0x8000
PML4 = 0x8000
PDPT = 0x9000
PD = 0xA000
IDENTITY_LIMIT = 64 << 30  # identity mapped with 2M pages: one PD page per GiB
MAILBOX_STRIDE = 0x80  # one mailbox per vCPU in the mailbox page (the agent uses no stack)
MAX_AGENTS = 0x1000 // MAILBOX_STRIDE

SEL_CODE, SEL_DATA, SEL_TSS = 0x08, 0x10, 0x18

# Mailbox slots and request codes; mirrored in guest/agent.s.
MB_OP, MB_GPA, MB_VALUE, MB_COUNT, MB_STRIDE, MB_ARG2, MB_ARG3, MB_RESULT, MB_DONE = (
    0x00, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40)
OP_READ8, OP_READ64, OP_WRITE8, OP_WRITE64, OP_ADD8, OP_ADD64 = 1, 2, 3, 4, 5, 6
OP_TOUCH_READ, OP_TOUCH_WRITE, OP_VMCALL, OP_VMMCALL, OP_HLT = 7, 8, 9, 10, 11

# x86 control bits used for long mode.
CR0_PE, CR0_NE, CR0_PG = 1 << 0, 1 << 5, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
PTE_P, PTE_RW, PTE_PS = 1 << 0, 1 << 1, 1 << 7


def _descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte GDT code/data descriptor."""
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       ((flags & 0xF) << 4) | ((limit >> 16) & 0xF), (base >> 24) & 0xFF)


def gdt() -> bytes:
    """null, 64-bit code (L=1), flat data, and a 16-byte 64-bit TSS descriptor."""
    tss_base = AGENT_GPA + TSS
    tss = _descriptor(tss_base, 0x67, 0x89, 0) + struct.pack("<II", tss_base >> 32, 0)
    return (bytes(8) + _descriptor(0, 0xFFFFF, 0x9A, 0xA) + _descriptor(0, 0xFFFFF, 0x92, 0xC)
            + tss)


def page_tables() -> dict[int, bytes]:
    """Identity map [0, IDENTITY_LIMIT) with 2M pages: {offset in the agent slot: page}."""
    gib = IDENTITY_LIMIT >> 30
    pages = {PML4: struct.pack("<Q", AGENT_GPA + PDPT | PTE_P | PTE_RW),
             PDPT: struct.pack(f"<{gib}Q", *(AGENT_GPA + PD + i * 4096 | PTE_P | PTE_RW
                                             for i in range(gib)))}
    for i in range(gib):
        pages[PD + i * 4096] = struct.pack(
            "<512Q", *((i << 30) + (j << 21) | PTE_P | PTE_RW | PTE_PS for j in range(512)))
    return pages


class Agent:
    """A guest agent on ``vm``: its own memslot (AGENT_SLOT at AGENT_GPA) and vCPU.
    :meth:`sibling` adds another vCPU running the same code with a mailbox of its own."""

    def __init__(self, vm: Vm, vcpu: Vcpu | None = None, *, _first: Agent | None = None) -> None:
        self.vm = vm
        if _first is None:
            self.index = 0
            self.memslot: Memslot = vm.add_memslot(AGENT_SLOT, AGENT_GPA, AGENT_SIZE)
            assert self.memslot.backing is not None
            self.mem: Mapping = self.memslot.backing
            code = assembler.image("agent")
            if len(code) > STACK_TOP - 0x1000 - CODE:
                raise GmemtestError("guest/agent.s outgrew its code area in gmemtest/agent.py")
            self.mem.write(GDT, gdt())
            self.mem.write(CODE, code)
            for offset, page in page_tables().items():
                self.mem.write(offset, page)
            self._siblings = 1
        else:
            if _first._siblings == MAX_AGENTS:
                raise GmemtestError(f"at most {MAX_AGENTS} agents share a memslot")
            self.index, _first._siblings = _first._siblings, _first._siblings + 1
            self.memslot, self.mem = _first.memslot, _first.mem
        self.mailbox = MAILBOX + self.index * MAILBOX_STRIDE
        self.vcpu = vcpu or vm.create_vcpu()
        cpuid = vm.kvm.supported_cpuid()
        self.vcpu.set_cpuid(cpuid)
        self._hypercall_op = OP_VMMCALL if _is_amd(cpuid) else OP_VMCALL
        self._enter_long_mode()
        self.pending: Exit | None = None
        first = self.resume()
        if isinstance(first, Exit):
            raise GmemtestError(f"the guest agent did not start: {first}")

    def sibling(self) -> Agent:
        """Another vCPU running the agent, driven independently (from its own thread if
        wanted: KVM_RUN releases the GIL)."""
        return Agent(self.vm, _first=self)

    def _enter_long_mode(self) -> None:
        sregs = self.vcpu.get_sregs()
        for name in ("cs", "ds", "es", "fs", "gs", "ss"):
            seg = getattr(sregs, name)
            seg.base, seg.limit, seg.present, seg.dpl, seg.s, seg.g = 0, 0xFFFFFFFF, 1, 0, 1, 1
            seg.avl, seg.unusable = 0, 0
            if name == "cs":  # 64-bit code: L=1, D=0, execute/read accessed
                seg.selector, seg.type, seg.l, seg.db = SEL_CODE, 11, 1, 0
            else:  # flat data: read/write accessed
                seg.selector, seg.type, seg.l, seg.db = SEL_DATA, 3, 0, 1
        tr = sregs.tr
        tr.base, tr.limit, tr.selector, tr.type = AGENT_GPA + TSS, 0x67, SEL_TSS, 11
        tr.present, tr.dpl, tr.s, tr.l, tr.db, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
        sregs.ldt.unusable = 1
        sregs.gdt.base, sregs.gdt.limit = AGENT_GPA + GDT, len(gdt()) - 1
        sregs.cr0 = CR0_PE | CR0_NE | CR0_PG
        sregs.cr3 = AGENT_GPA + PML4
        sregs.cr4 = CR4_PAE
        sregs.efer = EFER_LME | EFER_LMA
        self.vcpu.set_sregs(sregs)
        regs = self.vcpu.get_regs()
        regs.rip, regs.rsp, regs.rflags = AGENT_GPA + CODE, AGENT_GPA + STACK_TOP, 0x2
        regs.r15 = AGENT_GPA + self.mailbox
        self.vcpu.set_regs(regs)

    # --- the protocol ---------------------------------------------------------------------

    def resume(self, *, hypercall_ret: int | None = None) -> int | Exit:
        """Run the vCPU until the agent reports: the request's result, or the exit that came
        first (kept in ``pending``; the next resume retries or completes that instruction)."""
        if hypercall_ret is not None:
            self.vcpu.complete_hypercall(hypercall_ret)
        done = self.mem.read_u64(self.mailbox + MB_DONE)
        exit = self.vcpu.run()
        if isinstance(exit, Io) and exit.port == AGENT_PORT:
            if self.mem.read_u64(self.mailbox + MB_DONE) != done + 1:
                raise GmemtestError(f"guest agent report out of sequence after {done} requests")
            self.pending = None
            return self.mem.read_u64(self.mailbox + MB_RESULT)
        self.pending = exit
        return exit

    def request(self, op: int, gpa: int = 0, value: int = 0, count: int = 0, stride: int = 0,
                arg2: int = 0, arg3: int = 0) -> int | Exit:
        """Send one request; a previous request that exited is finished first."""
        if self.pending is not None:
            stuck = self.pending
            if isinstance(self.resume(), Exit):
                raise GmemtestError(f"the agent's previous access is still stuck ({stuck}, then "
                                    f"{self.pending}); resolve it before the next request")
        if gpa >= IDENTITY_LIMIT:
            raise GmemtestError(f"gpa {gpa:#x} is beyond the agent's identity map "
                                f"({IDENTITY_LIMIT:#x})")
        for slot, v in ((MB_OP, op), (MB_GPA, gpa), (MB_VALUE, value), (MB_COUNT, count),
                        (MB_STRIDE, stride), (MB_ARG2, arg2), (MB_ARG3, arg3)):
            self.mem.write_u64(self.mailbox + slot, v & (2**64 - 1))
        return self.resume()

    # --- what tests call ------------------------------------------------------------------

    def read(self, gpa: int, width: int = 1) -> int | Exit:
        """Guest load of a byte (width 1) or qword (width 8) at ``gpa``."""
        return self.request(_pick(width, OP_READ8, OP_READ64), gpa)

    def write(self, gpa: int, value: int, width: int = 1) -> Exit | None:
        """Guest store of a byte or qword at ``gpa``; None when it completed."""
        result = self.request(_pick(width, OP_WRITE8, OP_WRITE64), gpa, value)
        return result if isinstance(result, Exit) else None

    def add(self, gpa: int, delta: int, width: int = 1) -> int | Exit:
        """Guest read-modify-write (lock xadd): returns the old value."""
        return self.request(_pick(width, OP_ADD8, OP_ADD64), gpa, delta)

    def touch(self, gpa: int, pages: int, *, write: bool = False, value: int = 0,
              stride: int = uapi.PAGE_SIZE) -> int | Exit:
        """Guest access to one byte in each of ``pages`` pages from ``gpa`` (faults them in);
        reads return the sum of the bytes read."""
        op = OP_TOUCH_WRITE if write else OP_TOUCH_READ
        return self.request(op, gpa, value, pages, stride)

    def hypercall(self, nr: int, *args: int) -> int | Exit:
        """vmcall/vmmcall (the host CPU's flavour) with rbx, rcx, rdx, rsi = args."""
        a = [*args, 0, 0, 0, 0][:4]
        return self.request(self._hypercall_op, value=nr, count=a[0], stride=a[1], arg2=a[2],
                            arg3=a[3])

    def map_gpa_range(self, gpa: int, pages: int, *, private: bool) -> int | Exit:
        """KVM_HC_MAP_GPA_RANGE: the guest asks for [gpa, gpa + pages*4K) to become private
        (encrypted) or shared. With KVM_CAP_EXIT_HYPERCALL this exits to the host."""
        attrs = uapi.KVM_MAP_GPA_RANGE_ENCRYPTED if private else uapi.KVM_MAP_GPA_RANGE_DECRYPTED
        return self.hypercall(uapi.KVM_HC_MAP_GPA_RANGE, gpa, pages, attrs)

    def halt(self) -> int | Exit:
        """hlt: the vCPU exits with KVM_EXIT_HLT (no in-kernel LAPIC)."""
        return self.request(OP_HLT)


def _pick(width: int, byte_op: int, qword_op: int) -> int:
    if width not in (1, 8):
        raise ValueError(f"the agent accesses 1 or 8 bytes, not {width}")
    return byte_op if width == 1 else qword_op


def _is_amd(cpuid: uapi.CData) -> bool:
    """Leaf 0's vendor string in ``cpuid`` (``struct kvm_cpuid2 *``) names AMD (or Hygon):
    hypercalls use vmmcall there."""
    for e in cpuid.entries[0:cpuid.nent]:
        if e.function == 0:
            vendor = struct.pack("<III", e.ebx, e.edx, e.ecx)
            return vendor in (b"AuthenticAMD", b"HygonGenuine")
    return False
