"""What this host offers the VM tier: whether QEMU can run a KVM-accelerated guest that
itself runs KVM guests (hardware virtualisation with the vendor module's nesting on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
