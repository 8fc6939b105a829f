"""A model scenario becomes a KVM selftest (gmemtest.testing.selftest_writer) and a patch a
maintainer can take (`gmemtest kselftest`): what the C asserts is what the model says, a step
a selftest cannot do is refused by name, and the patch is checkpatch-clean and applies."""

import shutil
import subprocess
from pathlib import Path

import pytest
from bases import BASE

from gmemtest.errors import GmemtestError
from gmemtest.testing import selftest_writer as writer
from gmemtest.vmtier import kernel, patchset
from gmemtest.vmtier.kernelspec import Debian, KernelSpec
from gmemtest.vmtier.progress import Progress
from gmemtest.workflows import kselftest

pytestmark = pytest.mark.harness  # tests of gmemtest itself (the guest: the harness boot)

FINDINGS = Path(__file__).parent / "data/findings"
STALE_MMIO = (FINDINGS / "stale_mmio_spte.py").read_text()


def script(route_name, body, pages=4):
    return writer.read_script(f"with Scenario.open({route_name!r}, {pages}) as s:\n"
                              + "".join(f"    {line}\n" for line in body), "scenario.py")


def test_a_reproducer_reads_as_its_steps():
    s = writer.read_script(STALE_MMIO, "stale_mmio_spte.py")
    assert (s.route, s.pages) == ("gmem", 4)
    assert [st.op for st in s.steps] == ["convert", "guest_write", "memslot_cycle", "verify"]
    assert s.steps[0] == writer.Step("convert", (1, 1), True)


@pytest.mark.parametrize("route_name, fault", [("gmem", "false"), ("vm-attributes", "true")])
def test_the_c_asserts_what_the_model_says(route_name, fault):
    """In place, a read without the memslot is MMIO; through per-VM attributes a private
    page's is a memory fault; either way the guest reads back what it wrote."""
    c = writer.c_source(script(route_name, ["s.convert(1, 1, private=True)",
                                       "s.guest_write(1, 0x5a)", "s.memslot_cycle(1)"]),
                        ["title"])
    assert f"\tmemslot_cycle(&s, 1, {fault}, 0x5a);" in c
    assert "\tguest_read(&s, 1, 0x5a);" in c  # the verify the program ends with
    # in place the host's view of the private page is refused; else it reads the shared page
    assert ("\thost_read(&s, 1, -1);" if route_name == "gmem"
            else "\t\thost_read(&s, page, 0);") in c
    ioctl = "KVM_SET_MEMORY_ATTRIBUTES2" if route_name == "gmem" else "vm_set_memory_attributes"
    assert ioctl in c


def test_a_split_file_is_checked_in_alternating_runs():
    c = writer.c_source(script("gmem", ["s.split(0, 64, private=True)"], pages=64), ["t"])
    assert "\tsplit(&s, 0, 64, true);" in c
    assert "\tfor (page = 0; page < 64; page += 2) {\n\t\thost_read(&s, page, -1);\n" \
           "\t\thost_read(&s, page + 1, 0);\n\t}" in c


@pytest.mark.parametrize("step, why", [
    ("s.pin(0)", "pin\\(\\) needs a long-term pin"),
    ("s.convert_failing(0, 1, private=True, space=0)", "injected allocation failure"),
    ("s.reset()", "not a step a selftest can do"),
    ("s.convert(0, 1)", "private=True or private=False"),
    ("s.convert(3, 2, private=True)", "goes past the 4 pages"),
    ("print(1)", "not a step of the scenario"),
    ("x = 1", "not a step of the scenario")])
def test_a_step_a_selftest_cannot_do_is_refused_by_name(step, why):
    with pytest.raises(GmemtestError, match=f"^scenario.py:2: .*{why}"):
        script("gmem", [step])


@pytest.mark.parametrize("text, why", [
    ("s.convert(", "not a scenario"), ("x = 1\n", "no `with Scenario.open"),
    ("with Scenario.open('tdx', 4) as s:\n    s.verify()\n", "route 'tdx'")])
def test_a_file_that_is_no_scenario_is_one_line(text, why):
    with pytest.raises(GmemtestError, match=why):
        writer.read_script(text, "f.py")


@pytest.mark.needs("linux_source")
@pytest.mark.parametrize("finding", sorted(p.name for p in FINDINGS.glob("*.py")))
def test_a_finding_becomes_a_checkpatch_clean_patch_that_git_am_applies(finding, tmp_path):
    tree = kernel.prepare(KernelSpec(Debian(BASE), patchset.kpatches(BASE)), Progress())
    gen = kselftest.generate(kselftest.request(str(FINDINGS / finding), None, FINDINGS),
                             tree, tmp_path / "out")
    assert gen.clean, (tmp_path / "out/checkpatch.txt").read_text()
    assert gen.checkpatch.startswith("total: 0 errors, 0 warnings, 0 checks")
    repo = tmp_path / "tree"
    makefile = Path("tools/testing/selftests/kvm/Makefile.kvm")
    (repo / makefile.parent).mkdir(parents=True)
    shutil.copyfile(tree / makefile, repo / makefile)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t",
                                                 "commit", "-q", "-m", "the tree"],
                 ["-c", "user.name=t", "-c", "user.email=t@t", "am", "-q", str(gen.patch)]):
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert (repo / f"tools/testing/selftests/kvm/{gen.program}.c").is_file()
    assert f"TEST_GEN_PROGS_x86 += {gen.program}\n" in (repo / makefile).read_text()


def test_a_selftest_name_of_another_shape_is_one_line(tmp_path):
    with pytest.raises(GmemtestError, match="^--name Stale-MMIO: .*ends in _test"):
        kselftest.request(str(FINDINGS / "stale_mmio_spte.py"), "Stale-MMIO", FINDINGS)
    odd = tmp_path / "Odd.py"
    odd.write_text(STALE_MMIO)
    with pytest.raises(GmemtestError, match="^Odd.py gives the name Odd_test: .*give --name"):
        kselftest.request(str(odd), None, tmp_path)


def test_a_file_that_is_no_scenario_is_refused_before_any_kernel_work(tmp_path):
    with pytest.raises(GmemtestError, match="README.md: not a scenario"):
        kselftest.request(str(Path(__file__).parent.parent / "README.md"), None, tmp_path)


def test_a_findings_test_names_its_scenario(tmp_path):
    """`gmemtest kselftest` takes a finding's test in the suite for the scenario it replays;
    another test, or a finding that does not exist, is one line."""
    checkout = Path(__file__).parent.parent
    assert kselftest.scenario_of("tests/test_findings.py::test_finding[stale_mmio_spte]",
                                 checkout) == FINDINGS / "stale_mmio_spte.py"
    for arg, why in (("tests/test_routing.py::test_two_memslots_one_file", "through its scenario"),
                     ("tests/test_findings.py::test_finding[nope]", "no finding nope")):
        with pytest.raises(GmemtestError, match=why):
            kselftest.scenario_of(arg, checkout)
