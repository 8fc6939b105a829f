"""Issuing a uAPI ioctl by name and turning a refusal into a :class:`KvmError`."""

from __future__ import annotations

import errno
import threading
from typing import Any

from gmemtest.errors import KvmError, VmKilled

from . import libc, uapi

ffi = uapi.ffi
_get_ident = threading.get_ident


def struct_fields(cdata: Any) -> dict[str, Any]:
    """The fields of a struct (pointer) as a flat dict; all-zero padding and reserved arrays are
    left out so an error message shows what the caller set."""
    out: dict[str, Any] = {}
    ctype = ffi.typeof(cdata)
    if ctype.kind == "pointer":
        ctype = ctype.item
        cdata = cdata[0]
    for name, field in ctype.fields:
        if name == "error_offset":
            continue
        value = getattr(cdata, name)
        if field.type.kind == "array":
            items = list(value)
            if all(v == 0 for v in items) and (name.startswith(("pad", "reserved"))):
                continue
            out[name] = items
        elif field.type.kind == "primitive":
            out[name] = value
    return out


def kvm_ioctl(fd: int, name: str, arg: Any = 0, *, target: object = "",
              arguments: dict[str, Any] | None = None,
              error: type[KvmError] = KvmError) -> int:
    """Issue ioctl ``name`` (from :data:`uapi.IOCTLS`) on ``fd``; raise ``error`` on failure,
    :class:`VmKilled` when KVM answers EIO (it killed the VM).
    ``target`` names what the ioctl was issued on: a string, or an object whose ``target``
    property says it (only read when the ioctl fails: conversions are a hot path)."""
    ret, err = libc.ioctl(fd, uapi.IOCTLS[name], arg)
    if ret < 0:
        if arguments is None:
            arguments = struct_fields(arg) if isinstance(arg, ffi.CData) else {"arg": arg}
        offset = _error_offset(arg)
        where = target if isinstance(target, str) else str(getattr(target, "target", target))
        cls = VmKilled if err == errno.EIO else error
        raise cls(name, err, arguments, where, error_offset=offset)
    return ret


class Request:
    """An ioctl whose argument struct is allocated once and rewritten for each call, for the
    hot paths (conversions): a call allocates nothing, and reaches the kernel through the
    compiled ioctl. The struct belongs to the thread that made the Request; a call from another
    thread gets a struct of its own, so concurrent callers never share one."""

    __slots__ = ("name", "number", "ctype", "arg", "owner", "error")

    def __init__(self, name: str, struct: str, error: type[KvmError] = KvmError) -> None:
        self.name = name
        self.number = uapi.IOCTLS[name]
        self.ctype = f"struct {struct} *"
        self.arg: Any = ffi.new(self.ctype)
        self.owner = threading.get_ident()
        self.error = error

    def struct(self) -> Any:
        """The struct to fill for this call (zero only when freshly allocated: a caller sets
        every field the kernel reads)."""
        return self.arg if threading.get_ident() == self.owner else ffi.new(self.ctype)

    def issue(self, fd: int, arg: Any, target: object) -> int:
        """The ioctl on ``fd`` with ``arg`` (from :meth:`struct`); raises as kvm_ioctl does."""
        ret = uapi.lib.ioctl(fd, self.number, arg)
        if ret < 0:
            self.fail(arg, target)
        return int(ret)

    def fail(self, arg: Any, target: object) -> None:
        """Raise the error for the call with ``arg`` that just failed (errno still set)."""
        err = ffi.errno
        where = target if isinstance(target, str) else str(getattr(target, "target", target))
        cls = VmKilled if err == errno.EIO else self.error
        raise cls(self.name, err, struct_fields(arg), where, error_offset=_error_offset(arg))


# The compiled helpers (cdefs.HOT_CDEFS) that fill a conversion struct and issue the ioctl.
_HOT = {"KVM_SET_MEMORY_ATTRIBUTES": "gmemtest_set_memory_attributes",
        "KVM_SET_MEMORY_ATTRIBUTES2": "gmemtest_set_memory_attributes2"}


class Conversion(Request):
    """A conversion ioctl (KVM_SET_MEMORY_ATTRIBUTES on a VM, KVM_SET_MEMORY_ATTRIBUTES2 on a
    guest_memfd): the range's start, its size, the attributes and the flags go to the kernel in
    one compiled call that fills the reused struct (error_offset zeroed) and issues the ioctl.
    Where the module was not compiled, the same struct is filled from Python, for the same
    ioctl."""

    __slots__ = ("start_field", "call")

    def __init__(self, name: str, struct: str, start_field: str,
                 error: type[KvmError] = KvmError) -> None:
        super().__init__(name, struct, error)
        self.start_field = start_field
        self.call = getattr(uapi.lib, _HOT[name]) if uapi.COMPILED else self._fill_and_issue

    def convert(self, fd: int, start: int, size: int, attributes: int, flags: int,
                target: object) -> int:
        """The conversion of [start, start+size) to ``attributes`` on ``fd``; raises as
        kvm_ioctl does (with the kernel's error_offset where the struct has one)."""
        if _get_ident() == self.owner:
            ret: int = self.call(fd, self.number, self.arg, start, size, attributes, flags)
            if ret < 0:
                self.fail(self.arg, target)
            return ret
        arg = ffi.new(self.ctype)  # another thread's call: a struct of its own
        ret = self._fill_and_issue(fd, self.number, arg, start, size, attributes, flags)
        if ret < 0:
            self.fail(arg, target)
        return ret

    def _fill_and_issue(self, fd: int, number: int, arg: Any, start: int, size: int,
                        attributes: int, flags: int) -> int:
        setattr(arg, self.start_field, start)
        arg.size, arg.attributes, arg.flags = size, attributes, flags
        if hasattr(arg, "error_offset"):
            arg.error_offset = 0
        return int(uapi.lib.ioctl(fd, number, arg))


def _error_offset(arg: Any) -> int | None:
    """The kernel's error_offset out-field, for structs that have one."""
    if not isinstance(arg, ffi.CData) or ffi.typeof(arg).kind != "pointer":
        return None
    names = {name for name, _ in ffi.typeof(arg).item.fields or ()}
    return arg.error_offset if "error_offset" in names else None
