"""Issuing a uAPI ioctl by name and turning a refusal into a :class:`KvmError`."""

from __future__ import annotations

import errno
import threading
from typing import Any, NoReturn

from gmemtest.errors import KvmError, VmKilled

from . import libc, uapi

ffi = uapi.ffi


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


def _raise(name: str, error: type[KvmError], arg: Any, target: object) -> NoReturn:
    """Raise ``error`` (VmKilled for EIO) for ioctl ``name`` with struct ``arg``, which the
    kernel just refused: errno is still the call's."""
    err = ffi.errno
    where = target if isinstance(target, str) else str(getattr(target, "target", target))
    cls = VmKilled if err == errno.EIO else error
    raise cls(name, err, struct_fields(arg), where, error_offset=_error_offset(arg))


class Conversion:
    """A conversion ioctl (KVM_SET_MEMORY_ATTRIBUTES on a VM, KVM_SET_MEMORY_ATTRIBUTES2 on a
    guest_memfd) with only the fields every conversion sets: the range's start and size, the
    attributes and the flags (error_offset zero, reserved words zero). One compiled call
    (cdefs.HOT_CDEFS) fills the struct and issues the ioctl: nothing is allocated and nothing
    is shared between threads. Where the module was not compiled, Python does the same. An error
    reports the struct of the ioctl's own type."""

    __slots__ = ("name", "number", "error", "ctype", "start_field", "call", "refused", "_local")

    def __init__(self, name: str, struct: str, start_field: str,
                 error: type[KvmError] = KvmError) -> None:
        self.name = name
        self.number = uapi.IOCTLS[name]
        self.error = error
        self.ctype = f"struct {struct} *"
        self.start_field = start_field
        if uapi.COMPILED:
            self.call = uapi.lib.gmemtest_convert
            self.refused = uapi.lib.gmemtest_refused_conversion
        else:
            self._local = threading.local()
            self.call, self.refused = self._call_from_python, self._refused_from_python

    def fail(self, target: object) -> NoReturn:
        """Raise the error for the call this thread just made, which the kernel refused.
        The hot path is the caller's own line (a Python call less per conversion)::

            if conv.call(fd, conv.number, start, size, attributes, flags) < 0:
                conv.fail(target)
        """
        _raise(self.name, self.error, ffi.cast(self.ctype, self.refused()), target)

    def _call_from_python(self, fd: int, number: int, start: int, size: int, attributes: int,
                          flags: int) -> int:
        arg = ffi.new(self.ctype)
        setattr(arg, self.start_field, start)
        arg.size, arg.attributes, arg.flags = size, attributes, flags
        self._local.last = arg
        return int(uapi.lib.ioctl(fd, number, arg))

    def _refused_from_python(self) -> Any:
        return self._local.last


def _error_offset(arg: Any) -> int | None:
    """The kernel's error_offset out-field, for structs that have one."""
    if not isinstance(arg, ffi.CData) or ffi.typeof(arg).kind != "pointer":
        return None
    names = {name for name, _ in ffi.typeof(arg).item.fields or ()}
    return arg.error_offset if "error_offset" in names else None
