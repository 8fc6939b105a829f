"""What one boot was asked to test: the contract the host writes into the results share
(``contract.json``) before QEMU starts, the guest checks before its first test, and the report
reads back.

It holds the kind of boot (in-place conversion on, off, always on, or a kernel without the
series), every ``module.parameter=value`` and ``sysctl.x.y=value`` gmemtest put on the kernel
command line, and the needs (the plugin's vocabulary, ``gmemtest.testing.plugin``) that the
kernel's own build configuration and the asked switch promise, each with what promises it. A
kernel that does not answer as promised is not the kernel that was asked for: the boot ends
as an error naming the first broken promise (``broken.txt``), never as a run of skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError
from gmemtest.kvm import revision as rev

from .shape import ListOf, check, read_json

FILE = "contract.json"  # in the results share, written by the host
BROKEN = "broken.txt"  # in the results share, written by the guest: the broken promise


class BootKind(StrEnum):
    """A boot as the expected skips (gmemtest/results/expected_skips.toml) tell boots apart."""

    ON = "in-place on"  # the series, kvm.gmem_in_place_conversion on
    OFF = "in-place off"  # the series, switch off: conversion through per-VM attributes
    ALWAYS_ON = "always on"  # the applied series without per-VM attributes: no switch
    NO_SERIES = "no series"  # a kernel without the conversion series
    # The series in part: the switch, and not yet the conversion ioctl (a commit of the series
    # before it, as bisect-step and walk boot them): nothing converts in place.
    PARTIAL = "series in part"
    UNKNOWN = "unknown"  # a kernel built elsewhere: nothing is known of its configuration


@dataclass(frozen=True)
class Promise:
    """One need the boot must meet, and what promises it (a config option, the switch)."""

    need: str
    why: str


@dataclass(frozen=True)
class Contract:
    kind: BootKind
    params: tuple[tuple[str, str], ...]  # (module.parameter, value) as on the command line
    promises: tuple[Promise, ...]

    def promised(self, need: str) -> bool:
        return any(p.need == need for p in self.promises)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "params": [list(p) for p in self.params],
                "promises": [{"need": p.need, "why": p.why} for p in self.promises]}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


SHAPE = {"kind": str, "params": ListOf(ListOf(str)),
         "promises": ListOf({"need": str, "why": str})}


def from_json(data: Any) -> Contract:
    """A contract as :meth:`Contract.to_json` wrote it; one line (a GmemtestError) for a
    document of another shape."""
    check(data, SHAPE, "contract")
    if data["kind"] not in set(BootKind):
        raise GmemtestError(f"contract.kind: {data['kind']!r} is no kind of boot")
    if any(len(p) != 2 for p in data["params"]):
        raise GmemtestError("contract.params: a parameter is not a name and value")
    return Contract(BootKind(data["kind"]), tuple((p[0], p[1]) for p in data["params"]),
                    tuple(Promise(p["need"], p["why"]) for p in data["promises"]))


def read(path: Path) -> Contract:
    """The contract at ``path``; one line saying what is wrong with a damaged one."""
    doc = read_json(path, "a boot contract", f"{path}: no boot contract there")
    try:
        return from_json(doc)
    except GmemtestError as e:
        raise GmemtestError(f"{path}: not a boot contract ({e})") from None


def params_of(cmdline: list[str]) -> tuple[tuple[str, str], ...]:
    """The ``module.parameter=value`` words of a kernel command line (``sysctl.`` ones too)."""
    out = []
    for word in cmdline:
        name, eq, value = word.partition("=")
        module, dot, param = name.partition(".")
        if eq and dot and module and param:
            out.append((name, value))
    return tuple(out)


def switch_asked(params: tuple[tuple[str, str], ...]) -> bool | None:
    """The value the command line gives kvm.gmem_in_place_conversion (None: left alone). A
    value the kernel would refuse is left to the guest's check of the parameter."""
    names = (rev.PARAM_NAME, rev.PARAM_NAME.replace("_", "-"))
    for name, value in reversed(params):
        if name in names:
            return as_bool(value)
    return None


def as_bool(value: str) -> bool | None:
    """A boolean parameter's value as the kernel reads it (kstrtobool), None if it refuses it."""
    v = value.lower()
    if v[:1] in ("y", "1") or v[:2] == "on":
        return True
    if v[:1] in ("n", "0") or v[:2] == "of":
        return False
    return None


def promise(config: dict[str, str] | None, *, switch: bool | None, cap: int | None,
            cmdline: list[str]) -> Contract:
    """The contract of a boot of a kernel built with ``config`` (None: built elsewhere),
    having the switch parameter (``switch``; None: unknown) and defining the conversion
    capability ``cap`` in its uapi headers (None: none), booted with ``cmdline``."""
    params = params_of(cmdline)
    if config is None:
        return Contract(BootKind.UNKNOWN, params, ())
    promises = _kvm_promises(config)
    asked = switch_asked(params)
    attrs = rev.vm_memory_attributes(config)
    if switch and cap is None:
        return Contract(BootKind.PARTIAL, params, tuple(promises))
    if switch:
        on = asked if asked is not None else not attrs
        kind = BootKind.ON if on else BootKind.OFF
    elif cap is not None:
        kind, on = BootKind.ALWAYS_ON, True
    else:
        kind, on = BootKind.NO_SERIES, False
    if not promises:  # no KVM: nothing of the series can be asked of it
        return Contract(kind, params, ())
    if cap is not None:
        promises.append(Promise("series", f"{rev.CAP_NAME} = {cap} in the kernel's uapi headers"))
    if switch:
        if asked is None:
            promises.append(Promise("switch:default", f"{rev.PARAM_NAME} left at its default"))
        said = (f"{rev.PARAM_NAME}={int(asked)} on the command line" if asked is not None
                else f"{rev.PARAM_NAME} at its default ({'off' if attrs else 'on'}: "
                f"{rev.VM_ATTRIBUTES_OPTIONS[0]}={'y' if attrs else 'n'})")
        promises.append(Promise(f"switch:{'on' if on else 'off'}", said))
    elif cap is not None:
        promises.append(Promise("switch:on", f"no {rev.PARAM_NAME} and {rev.CAP_NAME} defined: "
                                "always on"))
    if _y(config, "CONFIG_KVM_SW_PROTECTED_VM"):
        if on and cap is not None:
            promises.append(Promise("route:gmem", f"in-place conversion on and {rev.CAP_NAME} "
                                    f"= {cap}"))
        if not on and attrs:
            opt = next(o for o in rev.VM_ATTRIBUTES_OPTIONS if _y(config, o))
            promises.append(Promise("route:vm-attributes",
                                    f"{opt}=y with in-place conversion off"))
    return Contract(kind, params, tuple(promises))


def _y(config: dict[str, str], option: str) -> bool:
    return config.get(option) == "y"


def _kvm_promises(config: dict[str, str]) -> list[Promise]:
    """What KVM built in promises, whatever the series: /dev/kvm and its capabilities."""
    if not (_y(config, "CONFIG_KVM") and (_y(config, "CONFIG_KVM_AMD")
                                          or _y(config, "CONFIG_KVM_INTEL"))):
        return []
    out = [Promise("KVM_CAP_BINARY_STATS_FD", "CONFIG_KVM=y (/dev/kvm)")]
    for option, need in (("CONFIG_KVM_GUEST_MEMFD", "KVM_CAP_GUEST_MEMFD"),
                         ("CONFIG_KVM_GENERIC_PRE_FAULT_MEMORY", "KVM_CAP_PRE_FAULT_MEMORY"),
                         ("CONFIG_KVM_SW_PROTECTED_VM", "vm_type:KVM_X86_SW_PROTECTED_VM")):
        if _y(config, option):
            out.append(Promise(need, f"{option}=y"))
    return out
