"""The pytest plugin behind the suite (registered as the ``gmemtest`` pytest11 entry point).

A test says what the kernel under test must offer with ``@pytest.mark.needs(...)``; the plugin
checks it in ``pytest_runtest_setup`` and skips naming what is absent. The vocabulary:

=================================  =========================================================
``KVM_CAP_<NAME>``                 the capability answers > 0 on /dev/kvm
``vm_type:<NAME>``                 the VM type is in KVM_CAP_VM_TYPES
``route:gmem``                     KVM_SET_MEMORY_ATTRIBUTES2 converts (the series, switch on)
``route:vm-attributes``            KVM_SET_MEMORY_ATTRIBUTES converts (per-VM attributes)
``switch:on`` / ``switch:off``     kvm.gmem_in_place_conversion has that value
``switch:default``                 the switch exists and the command line leaves it alone
``failslab``, ``fail_page_alloc``  fault injection aimed at one thread
``gup_test``                       long-term pins (CONFIG_GUP_TEST)
``gmem_flags:<A>+<B>[@<VM type>]`` KVM_CAP_GUEST_MEMFD_FLAGS on a VM of that type (default VM)
``guest_hypercalls``               guests can make VMCALL/VMMCALL exits (not kvm_pvm)
``kernel_config``                  the kernel's own config in /proc/config.gz
``kernel_headers``                 its uapi headers: $GMEMTEST_KERNEL_HEADERS, or on the host
                                   Debian's linux-libc-dev (the guest has no network)
``qemu``                           qemu-system-x86_64 (host-only tests of the VM tier)
``built_kernel``                   a kernel built by ``gmemtest kernel build``
``linux_source``                   Debian's linux-source-7.2 in the cache
``gitlab_ci_local``                gitlab-ci-local, to run .gitlab-ci.yml on this machine
=================================  =========================================================

Tests taking the ``route`` fixture run once per conversion route and need that route; the
``gmem_route``, ``vm_attributes_route`` and ``sw_vm`` fixtures imply their needs too. Every probe
runs once per session, when a test first needs it, never at import or collection.

A module of tests of the tool itself (kernel builds, QEMU runs, workflows) says
``pytestmark = pytest.mark.host_only``: inside the guest it is not even imported. A single test
can be marked ``host_only`` too. ``@pytest.mark.xfail_on(MODULE, reason=...)`` marks a known
deviation of a host's KVM module (e.g. ``kvm_pvm``) as a strict xfail where that module is loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from gmemtest.cache import cache_dir
from gmemtest.kvm import seriesconf, uapi
from gmemtest.kvm.kvm import Kvm
from gmemtest.kvm.vm import Vm

from . import faultinject, gup
from .routes import ROUTES, ConversionRoute, GmemRoute, VmAttributesRoute

IN_GUEST = bool(os.environ.get("GMEMTEST_IN_GUEST"))
HOST_ONLY_MARK = re.compile(r"^pytestmark = .*pytest\.mark\.host_only", re.M)
GMEM_FLAGS = {"MMAP": uapi.GUEST_MEMFD_FLAG_MMAP, "INIT_SHARED": uapi.GUEST_MEMFD_FLAG_INIT_SHARED,
              "HUGETLB": uapi.GUEST_MEMFD_FLAG_HUGETLB}
# Fixtures that imply a need: a test taking one needs what it provides.
FIXTURE_NEEDS = {"sw_vm": "vm_type:KVM_X86_SW_PROTECTED_VM", "gmem_route": "route:gmem",
                 "vm_attributes_route": "route:vm-attributes",
                 "vm_attributes_config": "kernel_config"}


# --- probes: each answers why a need is unmet (None when it is met), once per session ---------

@cache
def _kvm() -> Kvm | None:
    return Kvm() if os.path.exists("/dev/kvm") else None


@cache
def _vm_types() -> frozenset[int]:
    kvm = _kvm()
    return frozenset(kvm.vm_types()) if kvm else frozenset()


@cache
def missing(need: str) -> str | None:
    """Why ``need`` is unavailable on the running kernel, or None when it is there."""
    kind, _, arg = need.partition(":")
    if kind in ("qemu", "built_kernel", "linux_source"):
        return _missing_tool(kind)
    if kind == "gitlab_ci_local":
        for tool in ("gitlab-ci-local", "git", "rsync"):
            if shutil.which(tool) is None:
                return f"{tool} (scripts/bootstrap --ci-engine installs it)"
        return None
    if kind == "failslab" or kind == "fail_page_alloc":
        return faultinject.missing(kind)
    if kind == "gup_test":
        return gup.missing()
    if kind == "kernel_config":
        if seriesconf.running_config() is None:
            return f"{seriesconf.PROC_CONFIG} absent (CONFIG_IKCONFIG_PROC)"
        return None
    if kind == "kernel_headers":
        named = os.environ.get(seriesconf.ENV_HEADERS)
        if IN_GUEST and not (named and (Path(named) / "linux/kvm.h").is_file()):
            return (f"${seriesconf.ENV_HEADERS} naming the kernel's uapi headers (the guest has "
                    "no network to fetch Debian's linux-libc-dev): vm run --headers DIR")
        return None
    if kind == "switch":
        return _missing_switch(arg)
    if kind == "guest_hypercalls":
        if os.path.exists("/sys/module/kvm_pvm"):
            return "kvm_pvm module loaded: PVM has no VMCALL/VMMCALL hypercall exit"
        return None
    kvm = _kvm()
    if kvm is None:
        return "/dev/kvm absent (no KVM in this kernel)"
    if kind == "vm_type":
        if getattr(uapi, arg) not in _vm_types():
            return f"{arg} not in KVM_CAP_VM_TYPES"
        return None
    if kind == "route":
        if (reason := missing("vm_type:KVM_X86_SW_PROTECTED_VM")) is not None:
            return reason
        return ROUTES[arg].missing(kvm)
    if kind == "gmem_flags":
        return _missing_gmem_flags(kvm, arg)
    if kind.startswith("KVM_CAP_"):
        if kvm.check_extension(getattr(uapi, kind)) <= 0:
            return f"{kind} absent"
        return None
    raise ValueError(f"unknown need {need!r} (see gmemtest.testing.plugin)")


def _missing_switch(want: str) -> str | None:
    param = seriesconf.in_place_conversion_param()
    if param is None:
        return f"{seriesconf.PARAM} absent (a kernel without the in-place conversion series)"
    if want == "default":
        if seriesconf.param_on_cmdline():
            return (f"{seriesconf.PARAM_NAME} is set on the kernel command line "
                    "(/proc/cmdline): its default is not in force")
        return None
    if param != (want == "on"):
        return f"{seriesconf.PARAM_NAME}={int(param)}"
    return None


def _missing_gmem_flags(kvm: Kvm, arg: str) -> str | None:
    names, _, vm_type_name = arg.partition("@")
    vm_type_name = vm_type_name or "KVM_X86_DEFAULT_VM"
    if (reason := missing(f"vm_type:{vm_type_name}")) is not None:
        return reason
    want = sum(GMEM_FLAGS[n] for n in names.split("+"))
    with kvm.create_vm(getattr(uapi, vm_type_name)) as vm:
        offered = vm.check_extension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)
    if offered & want != want:
        return f"{names.replace('+', '|')} not in KVM_CAP_GUEST_MEMFD_FLAGS of {vm_type_name}"
    return None


def _missing_tool(kind: str) -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 (scripts/bootstrap --vm installs it)"
    if kind == "built_kernel" and not any(cache_dir("build").glob("*/gmemtest-manifest.json")):
        return "a kernel built by `gmemtest kernel build` (make vm-test builds it)"
    if kind in ("built_kernel", "linux_source") and not [
            p for p in cache_dir("src").glob("linux-source-7.2_*/linux-source-7.2")
            if "+" not in p.parent.name]:
        return "linux-source-7.2 in the cache (make vm-test fetches it)"
    return None


def needs_of(item: pytest.Item) -> list[str]:
    """Everything ``item`` needs: its ``needs`` marks, its route and its fixtures."""
    needs = [n for mark in item.iter_markers("needs") for n in mark.args]
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "route" in callspec.params:
        needs.append(f"route:{callspec.params['route']}")
    needs += [need for name, need in FIXTURE_NEEDS.items()
              if name in getattr(item, "fixturenames", ())]
    return needs


# --- hooks -----------------------------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gmem-attr-cap", default=None,
                     help=f"number of {seriesconf.CAP_NAME} on the kernel under test")
    parser.addoption("--kernel-headers", default=None,
                     help="kernel tree or installed headers of the kernel under test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*what): what the kernel under test must offer "
                            "(the vocabulary is in gmemtest.testing.plugin)")
    config.addinivalue_line("markers", "host_only: a test of the tool itself, not of the kernel "
                            "it runs on; not run inside the guest")
    config.addinivalue_line("markers", "xfail_on(module, reason): a strict xfail where that "
                            "kernel module is loaded (a known deviation of that KVM)")
    if config.getoption("--gmem-attr-cap"):
        os.environ[seriesconf.ENV_CAP] = config.getoption("--gmem-attr-cap")
    if config.getoption("--kernel-headers"):
        os.environ[seriesconf.ENV_HEADERS] = config.getoption("--kernel-headers")


def pytest_report_header(config: pytest.Config) -> list[str]:
    cap = seriesconf.conversion_cap()
    param = seriesconf.in_place_conversion_param()
    switch = "absent" if param is None else int(param)
    accel = os.environ.get("GMEMTEST_ACCEL") or _host_kvm()
    return [f"gmemtest: {seriesconf.CAP_NAME} = {cap.value} ({cap.source}); "
            f"{seriesconf.PARAM_NAME} = {switch}; accelerator: {accel}"]


def _host_kvm() -> str:
    loaded = sorted(p.name for p in Path("/sys/module").glob("kvm_*"))
    return f"/dev/kvm ({', '.join(loaded) or 'no kvm module'})"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Inside the guest, modules of host-only tests are not even imported."""
    if IN_GUEST and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        try:
            if HOST_ONLY_MARK.search(collection_path.read_text(errors="replace")):
                return True
        except OSError:
            return None
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("xfail_on"):
            if os.path.exists(f"/sys/module/{mark.args[0]}"):
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{mark.args[0]}: "
                                                  f"{mark.kwargs.get('reason', '')}"))
    if not IN_GUEST:
        return
    host_only = [i for i in items if i.get_closest_marker("host_only")]
    if host_only:
        config.hook.pytest_deselected(items=host_only)
        items[:] = [i for i in items if not i.get_closest_marker("host_only")]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for need in needs_of(item):
        reason = missing(need)
        if reason:
            # Reported at the test, not here: a reader looks for the test that skipped.
            raise pytest.skip.Exception(f"needs {need}: {reason}", _use_item_location=True)


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def kvm() -> Kvm:
    """/dev/kvm, opened once per session."""
    kvm = _kvm()
    if kvm is None:
        pytest.skip("needs /dev/kvm: absent (no KVM in this kernel)")
    return kvm


@pytest.fixture
def vm(kvm: Kvm) -> Iterator[Vm]:
    """A default (KVM_X86_DEFAULT_VM) VM, closed after the test."""
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        yield vm


@pytest.fixture
def sw_vm(kvm: Kvm) -> Iterator[Vm]:
    """A KVM_X86_SW_PROTECTED_VM, closed after the test."""
    with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        yield vm


@pytest.fixture(params=sorted(ROUTES))
def route(request: pytest.FixtureRequest, sw_vm: Vm) -> ConversionRoute:
    """Each conversion route on a SW_PROTECTED VM (the one the kernel lacks skips, naming the
    capability or parameter)."""
    return ROUTES[request.param](sw_vm)


@pytest.fixture
def gmem_route(sw_vm: Vm) -> ConversionRoute:
    """The guest_memfd route alone, for what only it can do."""
    return GmemRoute(sw_vm)


@pytest.fixture
def vm_attributes_route(sw_vm: Vm) -> ConversionRoute:
    """The per-VM attributes route alone."""
    return VmAttributesRoute(sw_vm)


@pytest.fixture
def vm_attributes_config() -> bool:
    """Whether the kernel under test was built with per-VM memory attributes
    (CONFIG_KVM_VM_MEMORY_ATTRIBUTES, upstream CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES), read from
    its own config."""
    return bool(seriesconf.vm_memory_attributes())


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record what a reliability test did (steps, conversions, injected faults...): printed,
    and in the guest appended to $GMEMTEST_RESULTS/reliability-<worker>.jsonl for the run's
    report."""

    def record(**counts: int | str) -> None:
        line = {"test": request.node.nodeid, **counts}
        print(json.dumps(line))
        results = os.environ.get("GMEMTEST_RESULTS")
        if results and IN_GUEST:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(Path(results) / f"reliability-{worker}.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

    return record


@pytest.fixture(scope="session")
def gmemtest_cli(request: pytest.FixtureRequest) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the ``gmemtest`` command (this checkout's) as a user would, from the checkout:
    ``gmemtest_cli(*args, timeout=240, **subprocess_kwargs)`` -> the finished process, its
    output captured as text."""
    root = request.config.rootpath

    def run(*args: str, timeout: float = 240,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("cwd", root)
        return subprocess.run([sys.executable, "-m", "gmemtest.cli", *args],
                              capture_output=True, text=True, timeout=timeout, **kw)

    return run
