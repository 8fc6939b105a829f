"""The guest half of `gmemtest bench`: measurements taken inside one boot, written to
$GMEMTEST_RESULTS/bench-guest.json for the host to report. Run only by gmemtest.workflows.bench.

- each upstream KVM selftest ($GMEMTEST_SELFTESTS) against the gmemtest tests covering the same
  ground, each side a fresh process, wall time;
- conversion round trips per second through the Python layer and through convert_loop.c (the
  same ioctls in C, $GMEMTEST_BENCH_LOOP), 4 KiB to 1 GiB;
- guest agent accesses (one KVM_RUN exit each) per second;
- the Python side's fixed costs: interpreter start, importing gmemtest, pytest collection;
- floors, the least a figure can come to on this machine whatever gmemtest does: a fresh
  interpreter importing pytest (no site, pytest's directory on its path), the gmemtest tests'
  own time inside each process, and conversions through the compiled call alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gmemtest import Agent, GuestMemfd, Kvm, Vm
from gmemtest.kvm import uapi
from gmemtest.kvm.revision import switch_param
from gmemtest.testing import GUEST_PYTEST_PLUGINS, plugin

CHECKOUT = Path(__file__).resolve().parent.parent.parent
RESULTS = Path(os.environ.get("GMEMTEST_RESULTS", "/tmp/results"))
SECONDS = float(os.environ.get("GMEMTEST_BENCH_SECONDS", "1"))
SIZES = (4 << 10, 64 << 10, 2 << 20, 64 << 20, 1 << 30)
GPA = 4 << 30

# Each upstream selftest and the gmemtest tests that cover the same ground.
# The upstream selftests that make memory private with the VM's KVM_SET_MEMORY_ATTRIBUTES.
VM_IOCTL_SELFTESTS = ("pre_fault_memory_test", "x86/private_mem_conversions_test",
                      "x86/private_mem_kvm_exits_test")
COMPARISON = {
    "guest_memfd_test": ["tests/test_guest_memfd.py"],
    "pre_fault_memory_test": ["tests/test_routing.py", "-k", "pre_fault"],
    "set_memory_region_test": ["tests/test_memslots.py"],
    "x86/private_mem_conversions_test": ["tests/test_routing.py", "tests/test_conversion.py",
                                         "-k", "not memory_fault and not mmio"],
    "x86/private_mem_kvm_exits_test": ["tests/test_conversion.py", "-k",
                                       "memory_fault or mmio"],
}


# What the guest's job gives pytest (gmemtest.vmtier.qemu.job_script): plugin autoload is off in
# the guest, so every pytest process here names the plugins the suite uses.
PYTEST = [sys.executable, "-m", "pytest", *GUEST_PYTEST_PLUGINS]


def least(cmd: list[str], times: int = 3, **kw) -> float:
    """The shortest of ``times`` runs of ``cmd``: the first fills the guest's page cache."""
    return min(timed(cmd, **kw)[0] for _ in range(times))


def own_seconds(junit: Path) -> float:
    """The tests' own time in a pytest run (setup, call and teardown of each test)."""
    return sum(float(case.get("time", 0)) for case in ET.parse(junit).iter("testcase"))


def timed(cmd: list[str], **kw) -> tuple[float, int, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=CHECKOUT, **kw)
    return time.monotonic() - start, proc.returncode, (proc.stdout + proc.stderr)[-300:]


def record(key: str, value: object) -> None:
    path = RESULTS / "bench-guest.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_first_test_starts():
    """Guest uptime when the first test starts (the host adds QEMU's start-up)."""
    record("first_test_uptime", float(Path("/proc/uptime").read_text().split()[0]))


def test_selftests_against_gmemtest():
    root = os.environ.get("GMEMTEST_SELFTESTS")
    assert root, "needs $GMEMTEST_SELFTESTS (gmemtest bench builds them)"
    env = {k: v for k, v in os.environ.items() if k != "GMEMTEST_RESULTS"}
    rows = []
    junit = Path("/tmp/bench-equivalent.xml")
    for selftest, selection in COMPARISON.items():
        c_time, c_rc, c_out = timed([str(Path(root) / selftest)])
        py_time, py_rc, py_out = timed(
            [*PYTEST, "-q", f"--junitxml={junit}", *selection], env=env)
        rows.append({"selftest": selftest, "selftest_seconds": round(c_time, 3),
                     "selftest_status": c_rc, "gmemtest": " ".join(selection),
                     "gmemtest_seconds": round(py_time, 3), "gmemtest_status": py_rc,
                     "gmemtest_tests_seconds": round(own_seconds(junit), 3),
                     "gmemtest_tail": py_out.strip().splitlines()[-1:]})
    record("comparison", rows)
    # With in-place conversion on, the selftests that make memory private through the VM
    # ioctl fail by design (README); every other side must have passed for its time to count.
    by_design = set(VM_IOCTL_SELFTESTS) if switch_param() else set()
    failed = [f"{r['selftest']}: selftest {r['selftest_status']}, gmemtest "
              f"{r['gmemtest_status']}" for r in rows if r["gmemtest_status"]
              or (r["selftest_status"] and r["selftest"] not in by_design)]
    assert not failed, failed


def test_fixed_costs():
    python, _, _ = timed([sys.executable, "-c", "pass"])
    imports, _, _ = timed([sys.executable, "-c", "import gmemtest"])
    profile = subprocess.run([sys.executable, "-X", "importtime", "-c", "import gmemtest"],
                             capture_output=True, text=True, cwd=CHECKOUT).stderr
    heaviest = sorted((ln.split("|") for ln in profile.splitlines()[1:] if ln.count("|") == 2),
                      key=lambda f: -int(f[1]))[:8]
    collect, _, _ = timed([*PYTEST, "-q", "--collect-only", "tests"])
    # What any pytest process pays before it reads an option: the least of three.
    bare_env = {**os.environ, "PYTHONPATH": str(Path(pytest.__file__).parent.parent)}
    record("fixed_costs", {
        "python_start_without_site_seconds": round(least([sys.executable, "-S", "-c", "pass"]),
                                                   3),
        "import_pytest_seconds": round(least([sys.executable, "-S", "-c", "import pytest"],
                                             env=bare_env), 3),
        "python_start_seconds": round(python, 3), "import_gmemtest_seconds": round(imports, 3),
        "collect_all_tests_seconds": round(collect, 3),
        "heaviest_imports_us": {f[2].strip(): int(f[1]) for f in heaviest}})


def test_conversion_round_trips():
    with Kvm() as kvm:
        via = "gmem" if plugin.missing("route:gmem") is None else "vm"
        python = []
        with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
            flags = uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED \
                if via == "gmem" else 0
            gmem = vm.create_guest_memfd(1 << 30, flags)
            for size in SIZES:
                n, start = 0, time.monotonic()
                while True:
                    if via == "gmem":
                        gmem.set_attributes(0, size, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
                        gmem.set_attributes(0, size, 0)
                    else:
                        vm.set_memory_attributes(GPA, size, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
                        vm.set_memory_attributes(GPA, size, 0)
                    n += 1
                    elapsed = time.monotonic() - start
                    if elapsed >= SECONDS:
                        break
                python.append({"size": size, "round_trips": n, "seconds": elapsed})
            bare = bare_round_trips(gmem, 0) if via == "gmem" else bare_round_trips(vm, GPA)
    loop = os.environ.get("GMEMTEST_BENCH_LOOP")
    assert loop, "needs $GMEMTEST_BENCH_LOOP (gmemtest bench builds convert_loop.c)"
    out = subprocess.run([loop, via, str(SECONDS), *map(str, SIZES)], capture_output=True,
                         text=True, check=True).stdout
    c = [json.loads(ln) for ln in out.splitlines()]
    record("conversion", {"via": via, "python": python, "c": c,
                          **({"python_bare": [bare]} if bare else {})})


def bare_round_trips(target: GuestMemfd | Vm, start_at: int) -> dict | None:
    """4 KiB round trips through ``target``'s compiled conversion call alone (what its
    set_memory_attributes or set_attributes makes), in a Python loop that checks the clock as
    convert_loop.c does: no method, no attribute lookup. None where the module was not
    compiled."""
    if not uapi.COMPILED:
        return None
    conv = target._convert
    call, number, fd = conv.call, conv.number, target.fd
    private, clock = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE, time.monotonic
    n, start = 0, clock()
    while True:
        if call(fd, number, start_at, 4096, private, 0) < 0 \
                or call(fd, number, start_at, 4096, 0, 0) < 0:
            conv.fail(target)
        n += 1
        elapsed = clock() - start
        if elapsed >= SECONDS:
            return {"size": 4096, "round_trips": n, "seconds": elapsed}


def test_agent_accesses():
    with Kvm() as kvm, kvm.create_vm() as vm:
        agent = Agent(vm)
        vm.add_memslot(1, GPA, 1 << 20)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < SECONDS:
            agent.read(GPA + (n % 256) * 4096)
            n += 1
        record("agent", {"accesses": n, "seconds": time.monotonic() - start})
