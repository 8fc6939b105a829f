"""Fail closed: what a boot promises (its contract), the skips each kind of boot may have, and
what a guest that died left behind. The boots themselves are in tests/test_vm_runner.py; these
check the harness's side on files it reads, so they run on the host only."""

from __future__ import annotations

import json
import re

import pytest

from gmemtest.errors import GmemtestError
from gmemtest.results import contract, progress, skips
from gmemtest.results.contract import BootKind
from gmemtest.results.outcome import Outcome, TestResult
from gmemtest.testing.preflight import param_problem

pytestmark = pytest.mark.host_only
KVM = {"CONFIG_KVM": "y", "CONFIG_KVM_AMD": "y", "CONFIG_KVM_GUEST_MEMFD": "y",
       "CONFIG_KVM_SW_PROTECTED_VM": "y", "CONFIG_KVM_GENERIC_PRE_FAULT_MEMORY": "y"}
ATTRS = {**KVM, "CONFIG_KVM_VM_MEMORY_ATTRIBUTES": "y"}


def needs(c: contract.Contract) -> set[str]:
    return {p.need for p in c.promises}


@pytest.mark.parametrize("config, switch, cmdline, kind, promised, not_promised", [
    (ATTRS, True, ["kvm.gmem_in_place_conversion=1"], BootKind.ON,
     {"switch:on", "route:gmem", "series", "KVM_CAP_GUEST_MEMFD"},
     {"route:vm-attributes", "switch:default"}),
    (ATTRS, True, [], BootKind.OFF, {"switch:off", "switch:default", "route:vm-attributes"},
     {"route:gmem"}),
    (ATTRS, True, ["kvm.gmem_in_place_conversion=0"], BootKind.OFF,
     {"switch:off", "route:vm-attributes"}, {"switch:default", "route:gmem"}),
    (KVM, False, [], BootKind.ALWAYS_ON, {"switch:on", "route:gmem"},
     {"route:vm-attributes", "switch:default"}),
    (KVM, True, [], BootKind.ON, {"switch:on", "switch:default", "route:gmem"}, set()),
])
def test_the_configuration_and_the_switch_make_the_promises(config, switch, cmdline, kind,
                                                            promised, not_promised):
    """Per-VM attributes built in and the switch at its default is a boot with in-place
    conversion off, which must convert through the VM ioctl; the switch on must convert
    through guest_memfd; the applied series without per-VM attributes is always on."""
    c = contract.promise(config, switch=switch, cap=252, cmdline=cmdline)
    assert c.kind is kind
    assert promised <= needs(c), needs(c)
    assert not needs(c) & not_promised, needs(c)


def test_a_commit_with_the_switch_before_the_conversion_ioctl_is_the_series_in_part():
    """bisect-step and walk boot the series' commits: one with the switch but not yet the
    conversion capability promises only what KVM does, and its in-place tests may skip."""
    c = contract.promise(ATTRS, switch=True, cap=None,
                         cmdline=["kvm.gmem_in_place_conversion=1"])
    assert c.kind is BootKind.PARTIAL
    assert needs(c) == {"KVM_CAP_BINARY_STATS_FD", "KVM_CAP_GUEST_MEMFD",
                        "KVM_CAP_PRE_FAULT_MEMORY", "vm_type:KVM_X86_SW_PROTECTED_VM"}
    skip = TestResult("t::x", Outcome.SKIPPED, "needs route:gmem: the series in part")
    assert skips.unexpected(BootKind.PARTIAL, [skip]) == []


def test_a_kernel_without_the_series_promises_the_vm_route_only():
    c = contract.promise({**KVM, "CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES": "y"}, switch=False,
                         cap=None, cmdline=[])
    assert c.kind is BootKind.NO_SERIES
    assert "route:vm-attributes" in needs(c)
    assert not {n for n in needs(c) if n.startswith(("switch", "route:gmem", "series"))}


def test_a_kernel_built_elsewhere_promises_only_its_parameters(tmp_path):
    c = contract.promise(None, switch=None, cap=None,
                         cmdline=["ro", "kvm.gmem_in_place_conversion=1", "a=b.c"])
    assert (c.kind, c.params, c.promises) == (
        BootKind.UNKNOWN, (("kvm.gmem_in_place_conversion", "1"),), ())
    c.write(tmp_path / "c.json")
    assert contract.read(tmp_path / "c.json") == c


@pytest.mark.parametrize("text", ["", "{", "[]", '{"kind": "on", "params": [], "promises": []}',
                                  '{"kind": "in-place on", "params": [["a"]], "promises": []}'])
def test_a_damaged_contract_is_one_line(tmp_path, text):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(GmemtestError, match="not a boot contract"):
        contract.read(tmp_path / "c.json")


@pytest.fixture
def sysfs(tmp_path):
    """A /sys/module and /proc/sys laid out as the kernel lays them out."""
    params = tmp_path / "module/kvm/parameters"
    params.mkdir(parents=True)
    (params / "gmem_in_place_conversion").write_text("N\n")
    (params / "halt_poll_ns").write_text("200000\n")
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/panic").write_text("0\n")
    return tmp_path


@pytest.mark.parametrize("word, problem", [
    ("kvm.gmem_in_place_conversion=0", None),
    ("kvm.gmem_in_place_conversion=n", None),
    ("kvm.gmem-in-place-conversion=off", None),
    ("kvm.halt_poll_ns=0x30d40", None),
    ("sysctl.kernel.panic=0", None),
    ("kvm.gmem_in_place_conversion=1", "did not take: .* reads 'N'"),
    ("kvm.gmem_in_place_convertion=1", r"kvm has no parameter gmem_in_place_convertion \(it has: "
     "gmem_in_place_conversion, halt_poll_ns\\)"),
    ("kvm_amd.npt=1", "no module kvm_amd in this kernel"),
    ("sysctl.kernel.panic_on_oops=1", "no sysctl kernel.panic_on_oops"),
])
def test_a_parameter_is_read_back(sysfs, word, problem):
    """A parameter took when the kernel reads it back as given (a boolean as kstrtobool reads
    it, a number in any base); otherwise what is wrong is named."""
    name, _, value = word.partition("=")
    found = param_problem(name, value, sysfs / "module", sysfs / "sys")
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert re.search(problem, found), found


def test_every_expected_skip_says_why_and_until_when():
    """The data file reads, and each entry names a boot kind it applies to."""
    rules = skips.allowed()
    assert rules
    assert all(r.why and r.until and r.boots for r in rules)


@pytest.mark.parametrize("kind, message, expected", [
    (BootKind.ON, "needs route:vm-attributes: KVM_CAP_MEMORY_ATTRIBUTES reports no PRIVATE", True),
    (BootKind.OFF, "needs route:vm-attributes: KVM_CAP_MEMORY_ATTRIBUTES reports no PRIVATE",
     False),
    (BootKind.OFF, "needs route:gmem: ... reports no PRIVATE", True),
    (BootKind.ON, "needs route:gmem: ... reports no PRIVATE", False),
    (BootKind.ON, "needs vm_type:KVM_X86_TDX_VM: not in KVM_CAP_VM_TYPES", True),
    (BootKind.ON, "needs gup_test: CONFIG_GUP_TEST", False),
    (BootKind.NO_SERIES, "needs switch:on: a kernel without the conversion series", True),
    (BootKind.ON, "needs /dev/kvm: absent", False),
])
def test_a_skip_its_kind_of_boot_may_not_have_is_unexpected(kind, message, expected):
    result = TestResult("tests.test_x::test_y", Outcome.SKIPPED, message)
    assert (skips.unexpected(kind, [result]) == []) is expected


def test_a_damaged_skip_list_is_one_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[skip]]\nneed = "route:gmem"\nboots = ["sometimes"]\nwhy = "x"\n'
                    'until = "y"\n')
    with pytest.raises(GmemtestError, match="boots is a list of"):
        skips.allowed(path)


def test_a_dead_guests_progress_tells_done_running_and_left(tmp_path):
    """The guest appends each test's start and end as they happen: a crash leaves the tests
    that finished (with their outcomes), the one it came under, and those not reached."""
    lines = [{"start": "tests/a.py::t1"}, {"done": "tests/a.py::t1", "outcome": "passed",
                                           "message": ""},
             {"start": "tests/a.py::t2"}]
    (tmp_path / progress.FILE).write_text("".join(json.dumps(x) + "\n" for x in lines)
                                          + '{"done": "tests/a.py::t2", "outc')
    (tmp_path / f"{progress.COLLECTED}-main.txt").write_text(
        "K tests/a.py::t1\nK tests/a.py::t2\nH tests/a.py::T::t3\n")
    p = progress.read(tmp_path)
    assert [(r.name, r.outcome) for r in p.done] == [("tests/a.py::t1", Outcome.PASSED)]
    assert p.running == ["tests/a.py::t2"]
    assert p.left == ["tests/a.py::T::t3"]
    assert progress.kernel_tests(tmp_path) == {"tests.a::t1", "tests.a::t2"}
    assert progress.junit_name("tests/a.py::T::t3[p]") == "tests.a.T::t3[p]"
