"""Fixtures and capability gating shared by the host and in-guest suites.

A test states what it needs with ``@pytest.mark.needs(...)``: capability names from
:mod:`gmemtest.uapi` (checked on /dev/kvm, or on a VM of the test's type for VM-scoped caps),
``"vm_type:KVM_X86_SW_PROTECTED_VM"``, or ``"conversion"`` (the series' gmem ioctl). When the
running kernel lacks one, the test skips naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gmemtest import Kvm, Vm, seriesconf, uapi
from gmemtest.paths import PATHS, ConversionPath, GmemPath, VmAttributesPath


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gmem-attr-cap", default=None,
                     help=f"number of {seriesconf.CAP_NAME} on the kernel under test")
    parser.addoption("--kernel-headers", default=None,
                     help="kernel tree or installed headers of the kernel under test")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*caps): capabilities the test needs")
    config.addinivalue_line("markers", "host_only: a test of the tool itself, not of the kernel "
                            "it runs on; deselected inside the guest")
    if config.getoption("--gmem-attr-cap"):
        os.environ[seriesconf.ENV_CAP] = config.getoption("--gmem-attr-cap")
    if config.getoption("--kernel-headers"):
        os.environ[seriesconf.ENV_HEADERS] = config.getoption("--kernel-headers")


def missing(kvm: Kvm, need: str) -> str | None:
    """Why ``need`` is unavailable on this kernel, or None when it is there."""
    if need.startswith("vm_type:"):
        name = need.split(":", 1)[1]
        vm_type = getattr(uapi, name)
        if vm_type not in kvm.vm_types():
            return f"{name} not in KVM_CAP_VM_TYPES"
        return None
    if need == "conversion":
        cap = seriesconf.conversion_cap()
        if not kvm.check_extension(cap.value) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE:
            return f"{seriesconf.CAP_NAME} ({cap.value}, {cap.source}) reports no PRIVATE"
        return None
    if kvm.check_extension(getattr(uapi, need)) <= 0:
        return f"{need} absent"
    return None


@pytest.fixture(scope="session")
def kvm_session() -> Iterator[Kvm]:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("/dev/kvm absent (no KVM in this kernel)")
    with Kvm() as kvm:
        yield kvm


@pytest.fixture
def kvm(kvm_session: Kvm, request: pytest.FixtureRequest) -> Kvm:
    """/dev/kvm, after skipping the test if it needs something this kernel lacks."""
    for mark in request.node.iter_markers("needs"):
        for need in mark.args:
            reason = missing(kvm_session, need)
            if reason:
                pytest.skip(f"needs {need}: {reason}")
    return kvm_session


@pytest.fixture
def vm(kvm: Kvm) -> Iterator[Vm]:
    """A default (KVM_X86_DEFAULT_VM) VM, closed after the test."""
    with kvm.create_vm(uapi.KVM_X86_DEFAULT_VM) as vm:
        yield vm


# Host-only tests (they build kernels and drive QEMU) are not collected inside the guest, and
# host_only tests are deselected there: the guest runs what depends on the kernel under test.
HOST_ONLY = ["test_vm_runner.py", "test_matrix.py", "test_bisect.py"]
collect_ignore = HOST_ONLY if os.environ.get("GMEMTEST_IN_GUEST") else []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("GMEMTEST_IN_GUEST"):
        return
    host_only = [i for i in items if i.get_closest_marker("host_only")]
    if host_only:
        config.hook.pytest_deselected(items=host_only)
        items[:] = [i for i in items if not i.get_closest_marker("host_only")]


@pytest.fixture
def sw_vm(kvm: Kvm) -> Iterator[Vm]:
    """A KVM_X86_SW_PROTECTED_VM (skips naming the VM type when the kernel lacks it)."""
    reason = missing(kvm, "vm_type:KVM_X86_SW_PROTECTED_VM")
    if reason:
        pytest.skip(f"needs KVM_X86_SW_PROTECTED_VM: {reason}")
    with kvm.create_vm(uapi.KVM_X86_SW_PROTECTED_VM) as vm:
        yield vm


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest, kvm: Kvm, sw_vm: Vm) -> ConversionPath:
    """Each conversion path on a SW_PROTECTED VM; the one this kernel lacks skips, naming the
    capability or parameter."""
    return _only(PATHS[request.param], kvm, sw_vm)


def _only(cls: type[ConversionPath], kvm: Kvm, vm: Vm) -> ConversionPath:
    reason = cls.missing(kvm)
    if reason:
        pytest.skip(f"{cls.name} path: {reason}")
    return cls(vm)


@pytest.fixture
def gmem_path(kvm: Kvm, sw_vm: Vm) -> ConversionPath:
    """The guest_memfd path alone, for what only it can do."""
    return _only(GmemPath, kvm, sw_vm)


@pytest.fixture
def vm_attributes_path(kvm: Kvm, sw_vm: Vm) -> ConversionPath:
    """The VM-attributes path alone."""
    return _only(VmAttributesPath, kvm, sw_vm)


@pytest.fixture
def vm_attributes_config() -> bool:
    """Whether the kernel under test was built with per-VM memory attributes
    (CONFIG_KVM_VM_MEMORY_ATTRIBUTES, upstream CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES), read from
    its own config; skips naming CONFIG_IKCONFIG_PROC when the kernel does not expose it."""
    have = seriesconf.vm_memory_attributes()
    if have is None:
        pytest.skip(f"needs the kernel's own config: {seriesconf.PROC_CONFIG} absent "
                    "(CONFIG_IKCONFIG_PROC)")
    return have


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record what a reliability test did (steps, conversions, injected faults...): printed,
    and in the guest appended to $GMEMTEST_RESULTS/reliability-<worker>.jsonl for the run's
    report."""

    def record(**counts: int | str) -> None:
        line = {"test": request.node.nodeid, **counts}
        print(json.dumps(line))
        results = os.environ.get("GMEMTEST_RESULTS")
        if results and os.environ.get("GMEMTEST_IN_GUEST"):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(Path(results) / f"reliability-{worker}.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")

    return record
