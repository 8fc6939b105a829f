"""Which revision of the in-place conversion series a kernel implements, and the facts of the
running kernel that the series decides: its switch and its own configuration.

Two revisions are in use (docs/uapi.md): v8, the posting trees such as Arm CCA's are built on,
and the series as applied upstream (v13, in kvm-x86/next, headed for 7.4). Their uAPI is the
same struct and ioctl, but the conversion capability has another number, and some behaviour
differs; :class:`Revision` describes each once. Which one a kernel implements is read from the
kernel itself, never assumed: the ``#define`` of the capability in its own uapi headers, or a
number the user names. A kernel whose headers define no such capability has no conversion
series.
"""

from __future__ import annotations

import errno
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gmemtest.errors import GmemtestError

from . import uapi

CAP_NAME = "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
PARAM_NAME = "kvm.gmem_in_place_conversion"
PARAM = Path("/sys/module/kvm/parameters/gmem_in_place_conversion")
PROC_CONFIG = Path("/proc/config.gz")
# Per-VM memory attributes: the series' user-selectable option, and upstream's name for it.
VM_ATTRIBUTES_OPTIONS = ("CONFIG_KVM_VM_MEMORY_ATTRIBUTES", "CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES")


@dataclass(frozen=True)
class Revision:
    """What one revision of the series promises where the revisions differ."""

    name: str
    title: str
    cap: int  # KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES
    # kvm.gmem_in_place_conversion exists when KVM keeps no per-VM memory attributes
    # (CONFIG_KVM_VM_MEMORY_ATTRIBUTES=n); the applied series then has no parameter: always on.
    switch_without_vm_attributes: bool
    # A conversion of a mixed range zaps KVM's mappings of every page of it, those already in
    # the requested state too (v8); the applied series zaps only the state being left.
    zaps_pages_already_converted: bool
    # With in-place conversion on, a guest_memfd without GUEST_MEMFD_FLAG_MMAP serves the
    # guest's shared gfns itself (applied); v8 serves them from the memslot's userspace_addr.
    non_mmap_shared_from_guest_memfd: bool


V8 = Revision("v8", "v8 (posted 2026-06-18)", 250, switch_without_vm_attributes=True,
              zaps_pages_already_converted=True, non_mmap_shared_from_guest_memfd=False)
APPLIED = Revision("applied", "as applied (v13, kvm-x86/next, headed for 7.4)", 252,
                   switch_without_vm_attributes=False, zaps_pages_already_converted=False,
                   non_mmap_shared_from_guest_memfd=True)
REVISIONS = {r.name: r for r in (V8, APPLIED)}


def by_cap(number: int, where: str) -> Revision:
    """The revision whose conversion capability is ``number`` (``where`` says who said so)."""
    for r in REVISIONS.values():
        if r.cap == number:
            return r
    known = ", ".join(f"{r.name}: {r.cap}" for r in REVISIONS.values())
    raise GmemtestError(f"{CAP_NAME} = {number} ({where}) is no revision gmemtest knows "
                        f"({known}): describe that revision in gmemtest/kvm/revision.py")


def kvm_header(path: Path) -> Path | None:
    """linux/kvm.h under a kernel source tree, a headers_install dir or an include dir."""
    for rel in ("include/uapi/linux/kvm.h", "include/linux/kvm.h", "linux/kvm.h",
                "usr/include/linux/kvm.h"):
        if (path / rel).is_file():
            return path / rel
    return None


def define_in(header: Path, name: str) -> int | None:
    """The integer value of ``#define name N`` in ``header``, if it has one: a number, or a
    flag bit as uapi headers write them, ``(1ULL << N)``."""
    text = header.read_text(errors="replace")
    m = re.search(rf"^#define\s+{re.escape(name)}\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)
    if m:
        return int(m.group(1), 0)
    m = re.search(rf"^#define\s+{re.escape(name)}\s+\(\s*1U?L{{0,2}}\s*<<\s*(\d+)\s*\)",
                  text, re.M)
    return 1 << int(m.group(1)) if m else None


class KvmFacts(Protocol):
    """What determining the revision asks of /dev/kvm (a :class:`gmemtest.kvm.kvm.Kvm`)."""

    def vm_types(self) -> list[int]: ...
    def check_extension(self, cap: int) -> int: ...


@dataclass(frozen=True)
class Target:
    """The kernel under test as the suite judges it: the revision it implements (None: it has
    no conversion series), the conversion capability's number (None: it defines none), where
    that was read, and the revision whose rules the tests expect (the kernel's own, unless
    ``--revision`` forces another)."""

    revision: Revision | None
    cap: int | None
    source: str
    expect: Revision | None

    @property
    def forced(self) -> bool:
        return self.expect is not self.revision

    def describe(self) -> str:
        """One line for report headers."""
        if self.revision is None:
            text = f"no conversion series ({self.source})"
        else:
            text = f"{self.revision.name}, {self.revision.title}: {CAP_NAME} = {self.cap} " \
                   f"({self.source})"
        if self.forced:
            text += (f"; judged by the rules of {self.expect.name if self.expect else 'none'} "
                     "(--revision)")
        return text


def determine(*, cap: int | None = None, headers: Path | None = None,
              revision: str | None = None, kvm: KvmFacts | None = None) -> Target:
    """The revision the kernel under test implements, from what the user named (``cap``) or
    the ``#define`` in its own uapi headers. With neither, a kernel that offers nothing to
    convert (no VM type with private memory and no switch) has no series; any other is an
    error naming what to pass. ``revision`` forces the rules the tests expect."""
    if revision is not None and revision not in REVISIONS:
        raise GmemtestError(f"--revision {revision}: expected one of "
                            f"{', '.join(REVISIONS)}")
    found: Revision | None
    if cap is not None:
        found, source = by_cap(cap, "named by the user"), "named by the user"
    elif headers is not None:
        header = kvm_header(headers)
        if header is None:
            raise GmemtestError(f"kernel headers {headers}: no linux/kvm.h there (pass the "
                                "kernel's installed uapi headers or its source tree)")
        cap = define_in(header, CAP_NAME)
        source = str(header)
        found = None if cap is None else by_cap(cap, source)
        if cap is None:
            source = f"{header} defines no {CAP_NAME}"
    elif kvm is not None and not offers_conversion(kvm):
        found, source = None, ("no VM type with private memory and no "
                               f"{PARAM_NAME}: nothing to convert")
    else:
        raise GmemtestError(f"cannot tell which revision of the conversion series this kernel "
                            f"implements ({CAP_NAME} moved between postings): pass "
                            "--kernel-headers DIR (its installed uapi headers) or "
                            "--gmem-attr-cap N")
    expect = REVISIONS[revision] if revision is not None else found
    return Target(found, cap, source, expect)


def offers_conversion(kvm: KvmFacts) -> bool:
    """Whether the running kernel could convert memory at all: a VM type with private memory,
    or the series' switch."""
    return bool(set(kvm.vm_types()) & uapi.PRIVATE_MEM_VM_TYPES) or switch_param() is not None


# --- the switch ---------------------------------------------------------------------------------

def switch_param() -> bool | None:
    """kvm.gmem_in_place_conversion as the running kernel has it; None when there is no such
    parameter. Any other failure to read it is an error, never "absent"."""
    try:
        text = PARAM.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise GmemtestError(f"reading {PARAM}: {errno.errorcode.get(e.errno or 0, e)}: "
                            f"{e.strerror}") from None
    if text not in ("Y", "N"):
        raise GmemtestError(f"{PARAM} reads {text!r}, not Y or N")
    return text == "Y"


@dataclass(frozen=True)
class Switch:
    """In-place conversion on the running kernel: the parameter (None: the kernel has none),
    whether conversion through guest_memfd is in force, and whether the command line sets
    the parameter."""

    param: bool | None
    on: bool
    on_cmdline: bool

    def describe(self) -> str:
        if self.param is None:
            return "no parameter: always on" if self.on else "absent"
        return f"{int(self.param)}" + (" (command line)" if self.on_cmdline else " (default)")


def switch(kvm: KvmFacts, target: Target) -> Switch:
    """The switch as the kernel has it, checked against the conversion capability: a
    parameter with no answer from the capability (or the reverse) is a contradiction and an
    error; no parameter while the capability answers PRIVATE means always on. A kernel whose
    headers define no capability (one without the series, or a tree in the middle of it, with
    the switch but not yet the ioctl) has nothing to check the parameter against."""
    param = switch_param()
    if target.cap is None:
        return Switch(param, bool(param), param_on_cmdline())
    answer = kvm.check_extension(target.cap)
    converts = bool(answer & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    if param is not None and param != converts:
        raise GmemtestError(f"contradiction: {PARAM_NAME}={int(param)} but {CAP_NAME} "
                            f"({target.cap}) answers {answer} on /dev/kvm")
    return Switch(param, converts, param_on_cmdline())


def param_on_cmdline(cmdline: Path = Path("/proc/cmdline")) -> bool:
    """Whether the kernel command line sets kvm.gmem_in_place_conversion."""
    words = cmdline.read_text().split()
    return any(w.split("=", 1)[0] in (PARAM_NAME, PARAM_NAME.replace("_", "-")) for w in words)


# --- the kernel's own configuration -------------------------------------------------------------

def running_config() -> dict[str, str] | None:
    """The running kernel's .config from /proc/config.gz (CONFIG_IKCONFIG_PROC), as
    CONFIG_X -> value; None when the kernel does not expose it. Any other failure to read it
    is an error."""
    try:
        data = PROC_CONFIG.read_bytes()
    except FileNotFoundError:
        return None
    try:
        text = gzip.decompress(data).decode(errors="replace")
    except (OSError, EOFError) as e:
        raise GmemtestError(f"{PROC_CONFIG}: not a gzip file ({e})") from None
    return {m.group(1): m.group(2) for m in re.finditer(r"^(CONFIG_\w+)=(.*)$", text, re.M)}


def vm_memory_attributes(config: dict[str, str]) -> bool:
    """Whether a kernel of this config keeps per-VM memory attributes (KVM_SET_MEMORY_ATTRIBUTES
    exists): CONFIG_KVM_VM_MEMORY_ATTRIBUTES, or upstream's CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES."""
    return any(config.get(o) == "y" for o in VM_ATTRIBUTES_OPTIONS)
