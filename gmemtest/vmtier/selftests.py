"""The kernel tree's own KVM selftests that exercise guest_memfd, found in the tree and built
with its own Makefile against the build's uapi headers, into ``<build dir>/kselftest/kvm``.

Which programs: those Makefile.kvm builds for x86 (``TEST_GEN_PROGS_COMMON`` and
``TEST_GEN_PROGS_x86``, ``_x86_64`` in older trees) whose source names guest_memfd. A posted
series that adds a selftest (a conversion test, say) is found the same way. A program that
converts through the VM ioctl (the tree's ``vm_set_memory_attributes`` and the helpers on it,
while that helper issues KVM_SET_MEMORY_ATTRIBUTES) needs the per-VM route, which in-place
conversion takes away: the guest skips it there, naming that need; one that converts through
the guest_memfd (KVM_SET_MEMORY_ATTRIBUTES2) needs in-place conversion, and the boot with it
off skips it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from gmemtest.testing import kselftest
from gmemtest.testing.kselftest import Listing, Program

from .make import first_error, make_env
from .progress import Progress

KVM_DIR = Path("tools/testing/selftests/kvm")
PROGRAM_LINE = re.compile(r"^TEST_GEN_PROGS_(?:COMMON|x86|x86_64)\s*[+:]?=\s*(.*)$", re.M)
GUEST_MEMFD = re.compile(r"guest_memfd|GUEST_MEMFD")
VM_CONVERSION = re.compile(r"\b(vm_set_memory_attributes|vm_mem_set_private"
                           r"|vm_mem_set_shared)\s*\(")
GMEM_CONVERSION = re.compile(r"\bKVM_SET_MEMORY_ATTRIBUTES2\b")
# The helper's definition, to its closing brace at the start of a line.
HELPER = re.compile(r"^static inline void vm_set_memory_attributes\(.*?^\}", re.S | re.M)
# Where a build keeps its tree's selftests, and what they were built from.
OUT = Path("kselftest/kvm")
STAMP = ".gmemtest-stamp"


def discover(src: Path) -> list[Program]:
    """The guest_memfd selftests of the tree at ``src``, in Makefile order, with their needs."""
    kvm = src / KVM_DIR
    makefile = kvm / "Makefile.kvm"
    if not makefile.is_file():
        return []
    names: list[str] = []
    for words in PROGRAM_LINE.findall(makefile.read_text(errors="replace")):
        names += [w for w in words.split() if not w.startswith("$") and w not in names]
    helper = kvm / "include/kvm_util.h"
    body = HELPER.search(helper.read_text(errors="replace")) if helper.is_file() else None
    vm_ioctl = body is not None and re.search(r"KVM_SET_MEMORY_ATTRIBUTES\b", body[0]) is not None
    out = []
    for name in names:
        source = kvm / f"{name}.c"
        text = source.read_text(errors="replace") if source.is_file() else ""
        if GUEST_MEMFD.search(text):
            needs = (("route:vm-attributes",) if vm_ioctl and VM_CONVERSION.search(text) else ()) \
                + (("route:gmem",) if GMEM_CONVERSION.search(text) else ())
            out.append(Program(name, needs))
    return out


def _stamp(src: Path, headers: Path) -> str:
    """What the built programs depend on: the newest file of the selftests and of the tools
    headers they include, and the installed uapi headers."""
    newest = 0
    for top in (src / KVM_DIR, src / "tools/include", src / "tools/arch/x86/include",
                src / "tools/testing/selftests/lib.mk", headers / "linux"):
        if top.is_file():
            newest = max(newest, top.stat().st_mtime_ns)
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                newest = max(newest, os.stat(os.path.join(root, f)).st_mtime_ns)
    return f"{src} {headers} {newest}\n"


def build(src: Path, headers: Path, build_dir: Path, progress: Progress,
          programs: list[Program] | None = None) -> Listing:
    """Build ``programs`` (default: the tree's guest_memfd selftests) of the tree at ``src``
    with the selftests' Makefile, against the uapi ``headers``, into ``build_dir``/kselftest/kvm;
    returns their listing. A program that does not build is listed with
    its error (the guest fails it), so that one broken selftest does not stop the others. Done
    again only when the selftests, the tools headers or the uapi headers changed."""
    out = build_dir / OUT
    programs = discover(src) if programs is None else programs
    stamp = _stamp(src, headers) + " ".join(p.name for p in programs)
    if (out / STAMP).is_file() and (out / STAMP).read_text() == stamp:
        return kselftest.read(out)
    out.mkdir(parents=True, exist_ok=True)
    progress.phase("selftests", f"{len(programs)} of the tree: "
                   + " ".join(p.name for p in programs))
    proc = subprocess.run(["make", "-s", "-k", "-C", str(src / KVM_DIR), f"OUTPUT={out}",
                           f"KHDR_INCLUDES=-isystem {headers}", f"-j{os.cpu_count() or 1}",
                           *(str(out / p.name) for p in programs)],
                          capture_output=True, text=True, env=make_env(src))
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    built = []
    for p in programs:
        error = None
        if not (out / p.name).is_file():
            mine = "\n".join(ln for ln in log.splitlines() if f"{p.name}." in ln) or log
            error = (f"did not build: {first_error(mine, proc.returncode)} "
                     f"(log: {out / 'build.log'})")
        built.append(Program(p.name, p.needs, error))
    listing = Listing(out, tuple(built))
    listing.write()
    if proc.returncode == 0:
        (out / STAMP).write_text(stamp)
    progress.done("selftests", str(out))
    return listing
