"""`gmemtest caps`: what the running kernel's KVM offers, at a glance."""

from __future__ import annotations

import os
from typing import Any

from gmemtest.kvm import seriesconf, uapi
from gmemtest.kvm.kvm import Kvm
from gmemtest.vmtier.host import nested_support

from .errors import KvmError

# Caps whose per-VM answer depends on the VM type.
VM_SCOPED = ("KVM_CAP_MEMORY_ATTRIBUTES", "KVM_CAP_GUEST_MEMFD", "KVM_CAP_GUEST_MEMFD_FLAGS",
             "KVM_CAP_PRE_FAULT_MEMORY", "KVM_CAP_MEMORY_FAULT_INFO", "KVM_CAP_EXIT_HYPERCALL")

GMEM_FLAG_NAMES = {uapi.GUEST_MEMFD_FLAG_MMAP: "MMAP", uapi.GUEST_MEMFD_FLAG_INIT_SHARED:
                   "INIT_SHARED", uapi.GUEST_MEMFD_FLAG_HUGETLB: "HUGETLB"}


def flag_names(value: int, names: dict[int, str]) -> list[str]:
    out = [name for bit, name in names.items() if value & bit]
    rest = value & ~sum(names)
    return out + ([hex(rest)] if rest else [])


def collect(kvm_path: str = "/dev/kvm", cap_override: int | None = None) -> dict[str, Any]:
    """Everything `gmemtest caps` shows, as a JSON-able dict."""
    cap = seriesconf.conversion_cap(cap_override)
    report: dict[str, Any] = {"kernel": os.uname().release, "kvm": kvm_path,
                              "nested": nested_support(),
                              "gmem_in_place_conversion": seriesconf.in_place_conversion_param()}
    try:
        kvm = Kvm(kvm_path)
    except OSError as e:
        report["error"] = f"cannot open {kvm_path}: {e.strerror}"
        return report
    with kvm:
        report["api_version"] = kvm.api_version()
        caps = dict(uapi.CAPS)
        caps[seriesconf.CAP_NAME] = cap.value
        report["caps"] = {name: kvm.check_extension(num) for name, num in caps.items()}
        report["conversion_cap"] = {"name": seriesconf.CAP_NAME, "number": cap.value,
                                    "source": cap.source,
                                    "value": report["caps"][seriesconf.CAP_NAME]}
        types = kvm.vm_types()
        report["vm_types"] = [uapi.VM_TYPE_NAMES.get(t, str(t)) for t in types]
        report["per_vm_type"] = {}
        for vm_type in sorted(set(types) | {uapi.KVM_X86_SW_PROTECTED_VM}):
            name = uapi.VM_TYPE_NAMES.get(vm_type, str(vm_type))
            try:
                vm = kvm.create_vm(vm_type)
            except KvmError as e:
                report["per_vm_type"][name] = {"error": f"KVM_CREATE_VM: {e.errno_name}"}
                continue
            with vm:
                scoped = (*VM_SCOPED, seriesconf.CAP_NAME)
                vm_caps = {c: vm.check_extension(caps[c]) for c in scoped}
                report["per_vm_type"][name] = {
                    "caps": vm_caps,
                    "guest_memfd_flags": flag_names(vm_caps["KVM_CAP_GUEST_MEMFD_FLAGS"],
                                                    GMEM_FLAG_NAMES)}
                if "stats" not in report:
                    report["stats"] = sorted(vm.stats())
    return report


def render(report: dict[str, Any]) -> str:
    """The report as an aligned text table."""
    rows: list[tuple[str, str]] = [("kernel", report["kernel"])]
    if "error" in report:
        rows.append(("error", report["error"]))
    else:
        rows.append(("KVM_GET_API_VERSION", str(report["api_version"])))
        rows.append(("VM types", ", ".join(report["vm_types"])))
        for name, value in report["caps"].items():
            rows.append((name, str(value)))
        c = report["conversion_cap"]
        rows.append(("conversion cap", f"{c['name']} = {c['number']} ({c['source']}): "
                     f"{c['value']}"))
        for vm_type, info in report["per_vm_type"].items():
            if "error" in info:
                rows.append((f"{vm_type}", info["error"]))
                continue
            caps = ", ".join(f"{k.removeprefix('KVM_CAP_')}={v}" for k, v in info["caps"].items())
            rows.append((f"{vm_type}", caps))
            rows.append((f"{vm_type} guest_memfd flags",
                         " | ".join(info["guest_memfd_flags"]) or "none"))
        rows.append(("VM stats", ", ".join(report.get("stats", []))))
    param = report["gmem_in_place_conversion"]
    rows.append(("kvm.gmem_in_place_conversion",
                 "absent" if param is None else ("Y" if param else "N")))
    n = report["nested"]
    rows.append(("nested guests", f"cpu {n['cpu_virt'] or 'no vmx/svm'}, module "
                 f"{n['module'] or '-'}, nested={n['nested'] or '-'}, loaded "
                 f"{' '.join(n['kvm_modules']) or 'none'}: "
                 f"{'can' if n['can_run_nested'] else 'cannot'} run KVM-accelerated nested guests"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
