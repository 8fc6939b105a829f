"""What this host offers the VM tier: whether QEMU can run a KVM-accelerated guest that
itself runs KVM guests (hardware virtualisation with the vendor module's nesting on)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from gmemtest.kvm import uapi


def nested_support() -> dict[str, Any]:
    """Can this host run a KVM-accelerated guest that itself runs KVM guests?"""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    words = set(flags.split())
    virt = "vmx" if "vmx" in words else "svm" if "svm" in words else None
    module = {"vmx": "kvm_intel", "svm": "kvm_amd"}.get(virt or "")
    param = Path(f"/sys/module/{module}/parameters/nested") if module else None
    nested = param.read_text().strip() if param and param.exists() else None
    loaded = sorted(p.name for p in Path("/sys/module").glob("kvm*"))
    return {"cpu_virt": virt, "module": module, "nested": nested,
            "kvm_modules": loaded, "can_run_nested": nested in ("1", "Y")}


@functools.cache
def tsc_khz(sample: float = 0.1) -> int | None:
    """The host's TSC rate in kHz, counted against CLOCK_MONOTONIC over ``sample`` seconds;
    None where the compiled module (its rdtsc) is absent. A TCG guest's TSC is the host's:
    given this rate (tsc_early_khz) its kernel needs no calibration against the PIT, which
    fails when the host is busy, leaving the TSC's rate wrong and nested vCPUs hung in
    KVM_RUN (seen with microvm, which has no HPET or ACPI PM timer to fall back on)."""
    rdtsc = getattr(uapi.lib, "gmemtest_rdtsc", None) if uapi.COMPILED else None
    if rdtsc is None:
        return None
    t0, c0 = time.monotonic_ns(), rdtsc()
    time.sleep(sample)
    t1, c1 = time.monotonic_ns(), rdtsc()
    return int((c1 - c0) * 1_000_000 // (t1 - t0))
