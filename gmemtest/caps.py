"""`gmemtest caps`: what the running kernel's KVM offers, at a glance."""

from __future__ import annotations

import os
from typing import Any

from gmemtest.kvm import revision as rev
from gmemtest.kvm import uapi
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


def collect(kvm: Kvm, target: rev.Target) -> dict[str, Any]:
    """Everything `gmemtest caps` shows, as a JSON-able dict."""
    report: dict[str, Any] = {"kernel": os.uname().release, "kvm": kvm.path,
                              "nested": nested_support()}
    report["api_version"] = kvm.api_version()
    caps = dict(uapi.CAPS)
    if target.cap is not None:
        caps[rev.CAP_NAME] = target.cap
    report["caps"] = {name: kvm.check_extension(num) for name, num in caps.items()}
    switch = rev.switch(kvm, target)
    report["revision"] = {
        "name": target.revision.name if target.revision else None,
        "title": target.revision.title if target.revision else None,
        "cap": target.cap, "source": target.source,
        "cap_answer": report["caps"].get(rev.CAP_NAME)}
    report["gmem_in_place_conversion"] = {"param": switch.param, "on": switch.on,
                                          "on_cmdline": switch.on_cmdline}
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
            scoped = [*VM_SCOPED, *([rev.CAP_NAME] if target.cap is not None else [])]
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
    rows.append(("KVM_GET_API_VERSION", str(report["api_version"])))
    rows.append(("VM types", ", ".join(report["vm_types"])))
    for name, value in report["caps"].items():
        rows.append((name, str(value)))
    r = report["revision"]
    rows.append(("conversion series", f"{r['name']}, {r['title']}: {rev.CAP_NAME} = "
                 f"{r['cap']} ({r['source']}), answers {r['cap_answer']}"
                 if r["name"] else f"none ({r['source']})"))
    for vm_type, info in report["per_vm_type"].items():
        if "error" in info:
            rows.append((f"{vm_type}", info["error"]))
            continue
        caps = ", ".join(f"{k.removeprefix('KVM_CAP_')}={v}" for k, v in info["caps"].items())
        rows.append((f"{vm_type}", caps))
        rows.append((f"{vm_type} guest_memfd flags",
                     " | ".join(info["guest_memfd_flags"]) or "none"))
    rows.append(("VM stats", ", ".join(report.get("stats", []))))
    s = report["gmem_in_place_conversion"]
    rows.append((rev.PARAM_NAME, rev.Switch(s["param"], s["on"], s["on_cmdline"]).describe()))
    n = report["nested"]
    rows.append(("nested guests", f"cpu {n['cpu_virt'] or 'no vmx/svm'}, module "
                 f"{n['module'] or '-'}, nested={n['nested'] or '-'}, loaded "
                 f"{' '.join(n['kvm_modules']) or 'none'}: "
                 f"{'can' if n['can_run_nested'] else 'cannot'} run KVM-accelerated nested guests"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
