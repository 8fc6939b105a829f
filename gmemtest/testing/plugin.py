"""The pytest plugin behind the suite (registered as the ``gmemtest`` pytest11 entry point).

A test says what the kernel under test must offer with ``@pytest.mark.needs(...)``; the plugin
checks it in ``pytest_runtest_setup`` and skips naming what is absent. The vocabulary:

=================================  =========================================================
``KVM_CAP_<NAME>``                 the capability answers > 0 on /dev/kvm
``vm_type:<NAME>``                 the VM type is in KVM_CAP_VM_TYPES
``route:gmem``                     KVM_SET_MEMORY_ATTRIBUTES2 converts (the series, switch on)
``route:vm-attributes``            KVM_SET_MEMORY_ATTRIBUTES converts (per-VM attributes)
``switch:on`` / ``switch:off``     in-place conversion is in force / is not, while the
                                   kernel has the series
``switch:default``                 the command line leaves kvm.gmem_in_place_conversion alone
``series``                         the kernel implements a revision of the conversion series
``failslab``, ``fail_page_alloc``  fault injection aimed at one thread
``fail_page_alloc:within``         ... and at allocations under one kernel function
                                   (CONFIG_FAULT_INJECTION_STACKTRACE_FILTER)
``gup_test``                       long-term pins (CONFIG_GUP_TEST)
``cachestat``                      cachestat(2), a file's page cache counted
                                   (CONFIG_CACHESTAT_SYSCALL)
``gmem_flags:<A>+<B>[@<VM type>]`` KVM_CAP_GUEST_MEMFD_FLAGS on a VM of that type (default VM)
``guest_hypercalls``               guests can make VMCALL/VMMCALL exits (not kvm_pvm)
``kernel_config``                  the kernel's own config in /proc/config.gz
``kernel_headers``                 its uapi headers: $GMEMTEST_KERNEL_HEADERS, or on the host
                                   Debian's linux-libc-dev (the guest has no network)
``qemu``                           qemu-system-x86_64 (host-only tests of the VM tier)
``built_kernel``                   a kernel built by ``gmemtest kernel build``
``linux_source``                   Debian's linux-source in the cache
``gitlab_ci_local``                gitlab-ci-local, to run .gitlab-ci.yml on this machine
``kselftests``                     the kernel tree's guest_memfd selftests, built with the
                                   kernel ($GMEMTEST_KSELFTESTS, gmemtest.testing.kselftest)
=================================  =========================================================

A word or value outside this vocabulary stops the run at collection. A probe that fails for
any reason other than "the kernel does not have it" (debugfs not mounted, a parameter that
cannot be read, a switch that contradicts the capability) is an error of the test, never a
skip.

Which revision of the series the kernel implements (gmemtest.kvm.revision) is determined once,
when pytest starts, from ``--gmem-attr-cap`` / $GMEMTEST_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES or the
kernel's own headers (``--kernel-headers`` / $GMEMTEST_KERNEL_HEADERS); a kernel whose revision
cannot be told stops the run with one line saying what to pass. ``--revision NAME`` (or
$GMEMTEST_REVISION) makes the tests expect another revision's rules, so that each test whose
expectation depends on the revision can be seen to fail on the other revision's kernel. The
``revision`` fixture is the revision whose rules the tests expect.

Tests taking the ``route`` fixture run once per conversion route and need that route; the
``gmem_route``, ``vm_attributes_route`` and ``sw_vm`` fixtures imply their needs too. Every probe
runs once per session, when a test first needs it, never at import or collection.

A module of tests of the tool itself (kernel builds, QEMU runs, workflows) says
``pytestmark = pytest.mark.host_only``: inside the guest it is not even imported. A single test
can be marked ``host_only`` too. The guest runs the tests of the kernel (:func:`is_kernel_test`):
the suite's other tests check the harness and run on the host, and in the guest only in the one
boot that asks for them ($GMEMTEST_HARNESS=1, ``gmemtest vm-test --harness``), and only those
that ask something of the kernel (:func:`needs_a_kernel`); a test that uses a VM to check the
harness itself says ``@pytest.mark.harness``.
``@pytest.mark.xfail_on(MODULE, errno, reason=...)`` marks a
known deviation of a host's KVM module (e.g. ``kvm_pvm``) as a strict xfail where that module
is loaded: the test must fail with a KvmError of that errno, and any other failure fails it.
"""

from __future__ import annotations

import argparse
import errno as errnos
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
from gmemtest.errors import GmemtestError, KvmError
from gmemtest.kvm import libc, uapi
from gmemtest.kvm import revision as rev
from gmemtest.kvm.kvm import Kvm
from gmemtest.kvm.vm import Vm
from gmemtest.results import contract

from . import (
    ENV_CAP,
    ENV_HARNESS,
    ENV_HEADERS,
    ENV_REVISION,
    faultinject,
    gcov,
    gup,
    isolation,
    kselftest,
    preflight,
)
from .routes import ROUTES, ConversionRoute, GmemRoute, VmAttributesRoute

IN_GUEST = bool(os.environ.get("GMEMTEST_IN_GUEST"))
HOST_ONLY_MARK = re.compile(r"^pytestmark = .*pytest\.mark\.host_only", re.M)
HARNESS_MARK = re.compile(r"^pytestmark = .*pytest\.mark\.harness", re.M)
GMEM_FLAGS = {"MMAP": uapi.GUEST_MEMFD_FLAG_MMAP, "INIT_SHARED": uapi.GUEST_MEMFD_FLAG_INIT_SHARED,
              "HUGETLB": uapi.GUEST_MEMFD_FLAG_HUGETLB}
# Fixtures that imply a need: a test taking one needs what it provides.
FIXTURE_NEEDS = {"sw_vm": "vm_type:KVM_X86_SW_PROTECTED_VM", "gmem_route": "route:gmem",
                 "vm_attributes_route": "route:vm-attributes",
                 "vm_attributes_config": "kernel_config", "kernel_revision": "series"}
# Needs without a value, and the values of those that take one.
PLAIN_NEEDS = frozenset({"failslab", "fail_page_alloc", "gup_test", "cachestat",
                         "guest_hypercalls",
                         "kernel_config", "kernel_headers", "qemu", "built_kernel",
                         "linux_source", "gitlab_ci_local", "series", "kselftests"})
SWITCH_VALUES = ("on", "off", "default")


# --- the kernel under test, determined once --------------------------------------------------

_target: rev.Target | None = None


def target() -> rev.Target:
    """The kernel under test's revision, as pytest_configure determined it."""
    if _target is None:
        raise GmemtestError("the gmemtest plugin was not configured")
    return _target


def determine_target(cap: str | None, headers: str | None, revision: str | None) -> rev.Target:
    """The boundary: options or environment values, parsed once into the target."""
    number = None
    if cap:
        try:
            number = int(cap, 0)
        except ValueError:
            raise GmemtestError(f"--gmem-attr-cap / ${ENV_CAP} {cap!r}: not a number") from None
    return rev.determine(cap=number, headers=Path(headers) if headers else None,
                         revision=revision or None, kvm=_kvm())


# --- probes: each answers why a need is unmet (None when it is met), once per session ---------

@cache
def _kvm() -> Kvm | None:
    return Kvm() if os.path.exists("/dev/kvm") else None


@cache
def _vm_types() -> frozenset[int]:
    kvm = _kvm()
    return frozenset(kvm.vm_types()) if kvm else frozenset()


@cache
def switch() -> rev.Switch:
    """The running kernel's switch, checked against its conversion capability."""
    kvm = _kvm()
    if kvm is None:
        return rev.Switch(rev.switch_param(), False, rev.param_on_cmdline())
    return rev.switch(kvm, target())


def check_need(need: str) -> None:
    """Raise ValueError when ``need`` is outside the vocabulary (module docstring)."""
    kind, sep, arg = need.partition(":")
    if (kind in PLAIN_NEEDS and not sep) \
            or (kind.startswith("KVM_CAP_") and not sep and kind in uapi.CAPS) \
            or (kind == "vm_type" and arg in uapi.VM_TYPE_NAMES.values()) \
            or (kind == "route" and arg in ROUTES) \
            or (kind == "switch" and arg in SWITCH_VALUES) \
            or (kind in faultinject.KINDS and arg == "within"):
        return
    if kind == "gmem_flags":
        names, _, vm_type = arg.partition("@")
        if names and all(n in GMEM_FLAGS for n in names.split("+")) \
                and (not vm_type or vm_type in uapi.VM_TYPE_NAMES.values()):
            return
    raise ValueError(f"unknown need {need!r} (the vocabulary is in gmemtest.testing.plugin)")


@cache
def missing(need: str) -> str | None:
    """Why ``need`` is unavailable on the running kernel, or None when it is there. A probe
    that cannot tell raises."""
    check_need(need)
    kind, _, arg = need.partition(":")
    if kind in ("qemu", "built_kernel", "linux_source"):
        return _missing_tool(kind)
    if kind == "gitlab_ci_local":
        for tool in ("gitlab-ci-local", "git", "rsync"):
            if shutil.which(tool) is None:
                return f"{tool} (scripts/bootstrap --ci-engine installs it)"
        return None
    if kind == "failslab" or kind == "fail_page_alloc":
        return faultinject.missing_filter(kind) if arg == "within" else faultinject.missing(kind)
    if kind == "gup_test":
        return gup.missing()
    if kind == "cachestat":
        return None if libc.has_cachestat() else "CONFIG_CACHESTAT_SYSCALL: cachestat(2) is ENOSYS"
    if kind == "kernel_config":
        if rev.running_config() is None:
            return f"{rev.PROC_CONFIG} absent (CONFIG_IKCONFIG_PROC)"
        return None
    if kind == "kernel_headers":
        named = os.environ.get(ENV_HEADERS)
        if IN_GUEST and not (named and (Path(named) / "linux/kvm.h").is_file()):
            return (f"${ENV_HEADERS} naming the kernel's uapi headers (the guest has "
                    "no network to fetch Debian's linux-libc-dev): vm run --headers DIR")
        return None
    if kind == "kselftests":
        if kselftest.from_env() is None:
            return (f"${kselftest.ENV} naming the kernel tree's selftests (a kernel gmemtest "
                    "builds has them, in its build directory's kselftest/kvm)")
        return None
    if kind == "series":
        t = target()
        return None if t.expect is not None else f"a conversion series: {t.source}"
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
        return ROUTES[arg].missing(kvm, target(), switch())
    if kind == "gmem_flags":
        return _missing_gmem_flags(kvm, arg)
    if kvm.check_extension(getattr(uapi, kind)) <= 0:
        return f"{kind} absent"
    return None


def _missing_switch(want: str) -> str | None:
    t = target()
    if t.revision is None:
        if rev.switch_param() is not None:
            return (f"{rev.PARAM_NAME}: the series in part, the switch without "
                    f"{rev.CAP_NAME} ({t.source})")
        return f"{rev.PARAM_NAME}: a kernel without the conversion series ({t.source})"
    s = switch()
    if want == "default":
        if s.on_cmdline:
            return (f"{rev.PARAM_NAME} is set on the kernel command line (/proc/cmdline): its "
                    "default is not in force")
        return None
    if s.on != (want == "on"):
        return f"in-place conversion {'on' if s.on else 'off'} ({rev.PARAM_NAME}: {s.describe()})"
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
            p for p in cache_dir("src").glob("linux-source-*_*/linux-source-*")
            if not re.search(r"\+[0-9a-f]{16}$", p.parent.name)]:  # not a patched copy
        return "Debian's linux-source in the cache (make vm-test fetches it)"
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
                     help=f"number of {rev.CAP_NAME} on the kernel under test "
                     f"(${ENV_CAP})")
    parser.addoption("--kernel-headers", default=None,
                     help=f"kernel tree or installed headers of the kernel under test "
                     f"(${ENV_HEADERS})")
    parser.addoption("--isolate", action=argparse.BooleanOptionalAction, default=IN_GUEST,
                     help="run each test in a process of its own, so that a crash or a hang "
                     "is one failed test (default: on in the guest)")
    parser.addoption("--revision", default=None, choices=sorted(rev.REVISIONS),
                     help="judge the kernel by this revision's rules instead of its own "
                     f"(${ENV_REVISION})")


def pytest_configure(config: pytest.Config) -> None:
    global _target
    config.addinivalue_line("markers", "needs(*what): what the kernel under test must offer "
                            "(the vocabulary is in gmemtest.testing.plugin)")
    config.addinivalue_line("markers", "harness: a test of the harness that uses a VM (not a "
                            "test of the kernel: the guest runs it in the harness boot only)")
    config.addinivalue_line("markers", "host_only: a test of the tool itself, not of the kernel "
                            "it runs on; not run inside the guest")
    config.addinivalue_line("markers", "xfail_on(module, errno, reason): a strict xfail where "
                            "that kernel module is loaded (a known deviation of that KVM)")
    if os.environ.get(gcov.ENV) and not hasattr(config, "workerinput"):
        results = Path(os.environ.get("GMEMTEST_RESULTS", "/tmp/results"))
        try:
            config.pluginmanager.register(gcov.Collector(results / "gcov"), "gmemtest-gcov")
        except GmemtestError as e:
            raise pytest.UsageError(f"gmemtest: {e}") from None
    if config.getoption("--isolate"):
        config.pluginmanager.register(
            isolation.Isolated(
                lambda item: any(n.partition(":")[0] == "fail_page_alloc" for n in needs_of(item)),
                skips_before_its_fixtures),
            "gmemtest-isolation")
    headers = config.getoption("--kernel-headers") or os.environ.get(ENV_HEADERS)
    if headers:
        os.environ[ENV_HEADERS] = headers  # what kernel_headers tests read
    try:
        _target = determine_target(config.getoption("--gmem-attr-cap") or os.environ.get(ENV_CAP),
                                   headers,
                                   config.getoption("--revision") or os.environ.get(ENV_REVISION))
    except (GmemtestError, OSError) as e:
        raise pytest.UsageError(f"gmemtest: {e}") from None
    if IN_GUEST and not hasattr(config, "workerinput"):
        _check_contract(Path(os.environ.get("GMEMTEST_RESULTS", "/tmp/results")))


def _check_contract(results: Path) -> None:
    """Before the first test: the kernel is the one the boot asked for (its contract, in the
    results share), or the run stops here, the broken promise written for the host."""
    if not (results / contract.FILE).exists():
        return
    try:
        asked = contract.read(results / contract.FILE)
    except GmemtestError as e:
        raise pytest.UsageError(f"gmemtest: {e}") from None
    broken = preflight.check(asked, missing)
    if broken is not None:
        (results / contract.BROKEN).write_text(broken + "\n")
        raise pytest.UsageError(f"gmemtest: not the kernel the boot asked for: {broken}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    t = target()
    try:
        s = switch().describe()
    except (GmemtestError, KvmError) as e:
        s = f"ERROR: {e}"
    accel = os.environ.get("GMEMTEST_ACCEL") or _host_kvm()
    return [f"gmemtest: revision {t.describe()}", f"gmemtest: {rev.PARAM_NAME}: {s}; "
            f"accelerator: {accel}"]


def properties() -> dict[str, str]:
    """What a run's JUnit and KTAP record of the kernel under test."""
    t = target()
    return {"gmemtest_revision": t.revision.name if t.revision else "none",
            "gmemtest_expected_revision": t.expect.name if t.expect else "none",
            "gmemtest_conversion_cap": "none" if t.cap is None else str(t.cap),
            "gmemtest_revision_source": t.source}


def pytest_sessionstart(session: pytest.Session) -> None:
    """The revision, in the JUnit file's properties (recorded here, in the process that
    writes the file: the tests may run in children of their own)."""
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    if xml is not None:
        for name, value in properties().items():
            xml.add_global_property(name, value)


def _host_kvm() -> str:
    loaded = sorted(p.name for p in Path("/sys/module").glob("kvm_*"))
    return f"/dev/kvm ({', '.join(loaded) or 'no kvm module'})"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Inside the guest, modules of host-only tests are not even imported, nor modules of the
    harness's tests but in the harness boot (collection is a cost of every boot)."""
    if IN_GUEST and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        try:
            text = collection_path.read_text(errors="replace")
        except OSError:
            return None
        if HOST_ONLY_MARK.search(text) or (os.environ.get(ENV_HARNESS) != "1"
                                           and HARNESS_MARK.search(text)):
            return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for need in needs_of(item):
            try:
                check_need(need)
            except ValueError as e:
                raise pytest.UsageError(f"{item.nodeid}: {e}") from None
        for mark in item.iter_markers("xfail_on"):
            module, err = mark.args
            if os.path.exists(f"/sys/module/{module}"):
                item.add_marker(pytest.mark.xfail(
                    strict=True, raises=KvmError,
                    reason=f"{module}: {errnos.errorcode[err]}: {mark.kwargs.get('reason', '')}"))
                item.stash[XFAIL_ERRNO] = err
    if not IN_GUEST:
        return
    suite = config.rootpath / "tests"
    harness_boot = os.environ.get(ENV_HARNESS) == "1"
    drop = [i for i in items if i.get_closest_marker("host_only") or (
        i.path.is_relative_to(suite) and (is_kernel_test(i) == harness_boot or (
            harness_boot and not needs_a_kernel(i))))]
    if drop:
        config.hook.pytest_deselected(items=drop)
        gone = set(map(id, drop))
        items[:] = [i for i in items if id(i) not in gone]


HOST_NEEDS = frozenset({"qemu", "built_kernel", "linux_source", "gitlab_ci_local"})


def needs_a_kernel(item: pytest.Item) -> bool:
    """Whether a test asks anything of the kernel it runs on (/dev/kvm, a capability...):
    a harness test that does not runs on the host alone (`make test`)."""
    return "kvm" in getattr(item, "fixturenames", ()) or any(
        n.partition(":")[0] not in HOST_NEEDS for n in needs_of(item))


def is_kernel_test(item: pytest.Item) -> bool:
    """A test of the kernel under test: it opens /dev/kvm (the ``kvm`` fixture, which every
    VM and route fixture takes) to check what the kernel does, and is not marked ``harness``."""
    return "kvm" in getattr(item, "fixturenames", ()) and item.get_closest_marker("harness") is None


XFAIL_ERRNO = pytest.StashKey[int]()


def _only_the_deviation(item: pytest.Item) -> Iterator[None]:
    """A strict xfail_on passes only with the errno it names: any other failure, in any phase
    of the test (its fixtures' setup and teardown too), is a failure."""
    try:
        return (yield)
    except KvmError as exc:
        err = item.stash.get(XFAIL_ERRNO, None)
        if err is not None and exc.errno != err:
            raise AssertionError(f"expected the known deviation's {errnos.errorcode[err]}, "
                                 f"got: {exc}") from exc
        raise


pytest_runtest_call = pytest.hookimpl(wrapper=True)(_only_the_deviation)
pytest_runtest_teardown = pytest.hookimpl(wrapper=True)(_only_the_deviation)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """The needs first (:func:`skip_unmet`), then the fixtures, within
    :func:`_only_the_deviation`."""
    skip_unmet(item)
    return (yield from _only_the_deviation(item))


def unmet(item: pytest.Item) -> str | None:
    """The skip naming the first capability the kernel lacks of those the test needs, or None;
    a probe that cannot tell (an error, not an absence) raises, unless a capability is
    missing anyway."""
    errors: list[Exception] = []
    for need in needs_of(item):
        try:
            reason = missing(need)
        except (GmemtestError, OSError) as e:
            errors.append(e)
            continue
        if reason:
            return f"needs {need}: {reason}"
    if errors:
        raise errors[0]
    return None


def skip_unmet(item: pytest.Item) -> None:
    """Skip naming the first capability the kernel lacks; a probe that cannot tell fails the
    test instead."""
    reason = unmet(item)
    if reason:
        # Reported at the test, not here: a reader looks for the test that skipped.
        raise pytest.skip.Exception(reason, _use_item_location=True)


def skips_before_its_fixtures(item: pytest.Item) -> bool:
    """Whether the test skips on a need the kernel lacks, before any fixture or line of it
    runs (what an isolated run reports without a child of its own). The probes' answers are
    cached, so the children forked after this inherit them."""
    try:
        return unmet(item) is not None
    except (GmemtestError, OSError):
        return False  # the child's setup fails the test with the probe's error


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
def kernel_revision() -> rev.Revision:
    """The revision of the conversion series whose rules the test expects: the one the
    kernel implements, or the one ``--revision`` forces."""
    expect = target().expect
    assert expect is not None, "needs series promised a revision"
    return expect


@pytest.fixture
def vm_attributes_config() -> bool:
    """Whether the kernel under test was built with per-VM memory attributes
    (CONFIG_KVM_VM_MEMORY_ATTRIBUTES, upstream CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES), read from
    its own config."""
    config = rev.running_config()
    assert config is not None, "needs kernel_config promised /proc/config.gz"
    return rev.vm_memory_attributes(config)


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
