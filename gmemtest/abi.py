"""ABI check: gmemtest's uAPI description against a kernel's uapi headers.

Every struct size and field offset, every ioctl number and constant in :mod:`gmemtest.kvm.uapi` is
compiled against the given headers in a small cffi API-mode module and compared. Items that only
the in-place conversion series (or the huge-page work in progress) defines are checked when the
headers have them and reported as absent otherwise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cffi import FFI

from gmemtest.kvm import revision as rev
from gmemtest.kvm import uapi

from . import tool
from .cache import cache_dir
from .errors import GmemtestError

ABSENT = -(2**63) + 1


class Status(StrEnum):
    """An item of the uAPI against the headers: the same value, another (or it does not
    compile), or absent where gmemtest allows it (an optional item of a newer revision)."""

    OK = "ok"
    DRIFT = "drift"
    ABSENT = "absent"


@dataclass
class Item:
    """One compared value: ``expr`` is the C expression, ``guard`` a macro it needs."""

    name: str
    expected: int
    expr: str
    guard: str | None = None
    optional: bool = False
    actual: int | None = None
    problem: str = ""

    @property
    def status(self) -> Status:
        if self.problem:
            return Status.DRIFT
        if self.actual == ABSENT:
            return Status.ABSENT if self.optional else Status.DRIFT
        return Status.OK if self.actual == self.expected else Status.DRIFT

    @property
    def shown_actual(self) -> str:
        if self.problem:
            return self.problem
        if self.actual == ABSENT:
            return "not defined"
        return str(self.actual)


def installed_headers(kernel_src: Path) -> Path:
    """A tree's uapi headers as userspace sees them (``make headers`` into a cached build dir;
    the raw include/uapi files are not usable from userspace)."""
    kvm_h = kernel_src / "include/uapi/linux/kvm.h"
    if not kvm_h.is_file():
        raise GmemtestError(f"{kernel_src} is not a kernel source tree "
                            "(no include/uapi/linux/kvm.h): pass the tree's top directory")
    key = hashlib.sha256(f"{kernel_src.resolve()}:{kvm_h.stat().st_mtime_ns}".encode())
    out = cache_dir("headers", key.hexdigest()[:16])
    tool.run(["make", "-s", "-C", kernel_src, f"O={out}", "headers"],
             f"make headers in {kernel_src}")
    return out / "usr/include"


def include_dirs(headers: Path | None = None, kernel_src: Path | None = None) -> list[Path]:
    """Include directories for an installed-headers dir (``make headers_install`` output, a
    distro's /usr/include) or for a kernel source tree (its headers are installed first)."""
    if kernel_src is not None:
        headers = installed_headers(kernel_src)
    assert headers is not None
    root = headers / "include" if (headers / "include/linux/kvm.h").is_file() else headers
    if not (root / "linux/kvm.h").is_file():
        raise GmemtestError(f"{headers} has no linux/kvm.h: pass an installed-headers dir "
                            "(make headers_install INSTALL_HDR_PATH=DIR) or use --kernel-src")
    dirs = [root]
    multiarch = root / "x86_64-linux-gnu"
    if multiarch.is_dir():
        dirs.append(multiarch)
    return dirs


def _struct_items(struct: str) -> list[Item]:
    series = struct in uapi.SERIES_STRUCTS
    guard = "KVM_SET_MEMORY_ATTRIBUTES2" if series else None
    ctype = uapi.ffi.typeof(f"struct {struct}")
    items = [Item(f"sizeof(struct {struct})", uapi.ffi.sizeof(ctype),
                  f"sizeof(struct {struct})", guard, series)]

    def walk(ct: Any, prefix: str, base: int) -> None:
        for name, field in ct.fields:
            path = f"{prefix}{name}"
            fguard, optional = guard, series
            if (struct, name) in uapi.SERIES_FIELDS:
                fguard, optional = "GUEST_MEMFD_FLAG_HUGETLB", True
            items.append(Item(f"offsetof(struct {struct}, {path})", base + field.offset,
                              f"offsetof(struct {struct}, {path})", fguard, optional))
            if field.type.kind in ("struct", "union") and field.type.cname.split()[-1][0] == "$":
                walk(field.type, f"{path}.", base + field.offset)

    walk(ctype, "", 0)
    return items


def items(headers_for_cap: Path | None = None) -> list[Item]:
    """Everything abi-check compares."""
    out: list[Item] = []
    for struct in uapi.STRUCTS:
        out += _struct_items(struct)
    for name, value in [*uapi.IOCTLS.items(), *uapi.CONSTANTS.items()]:
        out.append(Item(name, value, name, name,
                        name in uapi.SERIES_IOCTLS or name in uapi.SERIES_CONSTANTS))
    # The conversion capability: the number of the revision the headers define (one line
    # when their number belongs to no known revision), or absent (no series).
    if headers_for_cap is not None:
        t = rev.determine(headers=headers_for_cap)
        if t.revision is not None:
            out.append(Item(f"{rev.CAP_NAME} (revision {t.revision.name})", t.revision.cap,
                            rev.CAP_NAME, rev.CAP_NAME, True))
    return out


def _source(todo: list[Item]) -> tuple[str, dict[int, Item]]:
    lines = ["#include <stddef.h>", "#include <linux/kvm.h>", "#include <linux/kvm_para.h>",
             f"#define ABSENT ({ABSENT}LL)", "static const long long abi_values[] = {"]
    by_line: dict[int, Item] = {}
    for item in todo:
        if item.guard:
            lines.append(f"#ifdef {item.guard}")
        lines.append(f"\t(long long)({item.expr}),")
        by_line[len(lines)] = item
        if item.guard:
            lines += ["#else", "\tABSENT,", "#endif"]
    lines += ["};", "long long abi_value(int i) { return abi_values[i]; }", ""]
    return "\n".join(lines), by_line


def check(dirs: list[Path], headers_for_cap: Path | None = None) -> list[Item]:
    """Compile the items against ``dirs`` and fill in each item's actual value."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise GmemtestError("no C compiler: apt-get install gcc python3-dev")
    todo = items(headers_for_cap)
    flags = [f"-I{d}" for d in dirs]
    with tempfile.TemporaryDirectory(prefix="gmemtest-abi-") as tmp:
        # A field the headers lack is a compile error: find those first, report them, drop them.
        for _ in range(3):
            src, by_line = _source([i for i in todo if not i.problem])
            probe = Path(tmp, "probe.c")
            probe.write_text(src)
            proc = subprocess.run(["cc", "-fsyntax-only", *flags, str(probe)],
                                  capture_output=True, text=True)
            if proc.returncode == 0:
                break
            failed = False
            for m in re.finditer(r"probe\.c:(\d+):\d+: error: (.*)", proc.stderr):
                item = by_line.get(int(m.group(1)))
                if item is not None and not item.problem:
                    item.problem = m.group(2).replace("\u2018", "'").replace("\u2019", "'")
                    failed = True
            if not failed:
                raise GmemtestError(f"the headers in {dirs[0]} do not compile: "
                                    f"{proc.stderr.strip().splitlines()[0]}")
        live = [i for i in todo if not i.problem]
        src, _ = _source(live)
        ffi = FFI()
        ffi.cdef("long long abi_value(int i);")
        modname = f"_gmemtest_abi_{abs(hash((src, tuple(flags)))):x}"
        ffi.set_source(modname, src, include_dirs=[str(d) for d in dirs])
        try:
            path = ffi.compile(tmpdir=tmp, verbose=False)
        except Exception as e:  # cffi raises distutils/setuptools errors of several kinds
            raise GmemtestError(f"compiling the ABI module failed: {e}") from None
        spec = importlib.util.spec_from_file_location(modname, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for i, item in enumerate(live):
            item.actual = module.lib.abi_value(i)
    return todo


def report(results: list[Item], *, show_all: bool = False) -> str:
    """A table of the drifted items (every item with ``show_all``) and a summary line."""
    rows = [r for r in results if show_all or r.status is Status.DRIFT]
    lines = []
    if rows:
        w = max(len(r.name) for r in rows)
        lines.append(f"{'item':<{w}}  {'gmemtest':>12}  {'headers':>12}  status")
        for r in rows:
            lines.append(f"{r.name:<{w}}  {r.expected:>12}  {r.shown_actual:>12}  {r.status}")
    counts = {s: sum(r.status is s for r in results) for s in Status}
    absent = sorted({_short(r.name) for r in results if r.status is Status.ABSENT})
    lines.append(f"{len(results)} items: {counts[Status.OK]} ok, {counts[Status.DRIFT]} drift, "
                 f"{counts[Status.ABSENT]} absent (series-only: {', '.join(absent) or 'none'})")
    return "\n".join(lines)


def _short(name: str) -> str:
    """'offsetof(struct S, f)' and 'sizeof(struct S)' as 'struct S', for the absent summary."""
    m = re.match(r"(?:sizeof|offsetof)\(struct (\w+)", name)
    if m and m.group(1) in uapi.SERIES_STRUCTS:
        return f"struct {m.group(1)}"
    m = re.match(r"offsetof\(struct (\w+), (\w+)\)", name)
    return f"{m.group(1)}.{m.group(2)}" if m else name
