"""The VM tier on the host: boots of a built kernel that must fail, and fail clearly.

These need QEMU and a kernel built by `gmemtest kernel build` (the main job builds one); they
are not collected inside the guest (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bases import BASE

from gmemtest.cache import cache_dir
from gmemtest.errors import GmemtestError
from gmemtest.results import report
from gmemtest.results.run import Ended
from gmemtest.vmtier import debian, kconfig, kernel, kernelspec, manifest, patchset, qemu
from gmemtest.workflows import vmtest

CHECKOUT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.host_only


def newest_build() -> kernel.Build | None:
    """The newest build of the Debian source (the main job's), else the newest of any tree
    (the bisect test builds trees of its own while these tests run)."""
    found = []
    for p in sorted(cache_dir("build").glob(f"*/{manifest.NAME}"),
                    key=lambda p: p.stat().st_mtime):
        try:
            found.append(manifest.read(p))
        except GmemtestError:  # a build of an older gmemtest, not rebuilt since
            continue
    debian = [m for m in found if m.kind == "debian"]
    # the main job's: kpatches/ (a test's own patched builds are not what the others boot)
    debian = [m for m in debian if (m.patch_set or "").startswith("kpatches")] or debian
    m = (debian or found or [None])[-1]
    if m is None:
        return None
    return kernel.resolve(kernelspec.KernelSpec(kernelspec.prebuilt(Path(m.bzimage))))


@pytest.fixture(scope="module")
def build() -> kernel.Build:
    """The kernel the tests boot (``needs("built_kernel")``)."""
    b = newest_build()
    assert b is not None, "a built kernel, which needs('built_kernel') promised"
    return b


def qemu_processes(results: Path) -> list[str]:
    """QEMU processes sharing ``results`` (this test's boot, not another one running)."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*path={results}"],
                         capture_output=True, text=True).stdout
    return out.split()


@pytest.mark.needs("built_kernel")
def test_real_warn_fails_a_passing_run(build, tmp_path):
    """lkdtm makes the guest kernel log a real WARN from a test that passes: the run fails on
    kernel health, naming the report and the test that was running."""
    run = qemu.boot(build,
                    [str(CHECKOUT / "vmimages/provoke/test_provoke_warn.py")],
                    results=tmp_path / "results", echo=False)
    outcome = report.evaluate("provoke", run)
    assert outcome.passed == 1
    assert outcome.failed == 0
    assert not outcome.ok
    first = outcome.findings[0]
    assert first.kind == "WARNING", first
    assert "lkdtm" in first.line, first
    assert any("test_provoke_warning" in t for t in first.tests)
    assert outcome.verdict().startswith("FAIL: kernel health: WARNING during ")


@pytest.mark.needs("built_kernel")
def test_a_boot_asked_to_stops_at_the_kernels_first_report(build, tmp_path):
    """gmemtest mutate's boots end shortly after the kernel's first report (its verdict), not
    when the test that caused it, or the ones after it, give up: here the test after the WARN
    hangs the guest, which only the 60 s silence limit would end."""
    results = tmp_path / "results"
    run = qemu.boot(build, ["-p", "no:xdist", "-x",
                            str(CHECKOUT / "vmimages/provoke/test_provoke_warn.py"),
                            str(CHECKOUT / "vmimages/provoke/test_provoke_hang.py")],
                    results=results, echo=False, stop_at_report=True,
                    limits=qemu.Limits(silence=60, total=300))
    assert run.limit is Ended.KERNEL_REPORT, (run.limit, run.limit_hit)
    assert run.seconds < 60, run.seconds
    outcome = report.evaluate("provoke", run)
    assert outcome.findings, outcome.findings
    assert outcome.findings[0].kind == "WARNING", outcome.findings
    assert "lkdtm" in outcome.findings[0].line
    assert qemu_processes(results) == []


@pytest.mark.needs("built_kernel")
def test_hanging_boot_is_one_line_and_leaves_no_qemu(build, tmp_path):
    """An init that never prints the banner hits the boot limit: one error line naming the
    limit, exit 2, and no QEMU process left behind."""
    proc = subprocess.run(
        [sys.executable, "-m", "gmemtest.cli", "vm", "run", "--kernel", str(build.bzimage),
         "--boot-timeout", "8", "--results", str(tmp_path / "r"), "--cmdline",
         "init=/usr/bin/sleep", "--cmdline", "3600", "--", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert "boot timeout: no init banner within 8 s" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert qemu_processes(tmp_path / "r") == []


@pytest.mark.needs("built_kernel")
def test_qemu_absent_is_one_line(build, tmp_path):
    env = dict(os.environ, PATH="/nonexistent")
    proc = subprocess.run([sys.executable, "-m", "gmemtest.cli", "vm", "run", "--kernel",
                           str(build.bzimage), "--results", str(tmp_path), "--", "-q"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gmemtest vm run: error: qemu-system-x86_64 not found: "
                                   "apt-get install qemu-system-x86 (or run scripts/bootstrap "
                                   "--vm)")


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such kernel image"),
    (lambda p: p.write_bytes(b"MZ" + bytes(0x300)), "not an x86 bzImage"),
    (lambda p: p.mkdir(), "a directory without gmemtest-manifest.json"),
])
def test_vm_run_of_what_is_not_a_kernel_is_one_line(tmp_path, make, message, gmemtest_cli):
    """`vm run --kernel` of a missing file, a file without the bzImage setup header, or a
    directory that is no build: one line before QEMU is started, exit 2, no results left."""
    kimage = tmp_path / "bzImage"
    make(kimage)
    proc = gmemtest_cli("vm", "run", "--kernel", str(kimage), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert not (tmp_path / "r").exists()
    assert qemu_processes(tmp_path / "r") == []


@pytest.mark.needs("built_kernel")
def test_dropped_kconfig_option_is_named(build, tmp_path):
    """A fragment asking for an option whose dependency is off fails the configuration step,
    naming the option and the dependency with its value."""
    assert build.source_path is not None
    src = build.source_path
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_DEBUG_FS=y\nCONFIG_LKDTM=y\n")
    with pytest.raises(GmemtestError) as e:
        kconfig.generate(src, tmp_path / "build", [frag], dict(os.environ))
    msg = str(e.value)
    assert "CONFIG_LKDTM=y (got n; needs" in msg
    assert "RUNTIME_TESTING_MENU=n" in msg
    assert "CONFIG_DEBUG_FS" not in msg




def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("gmemtest")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.needs("built_kernel")
def test_guest_out_of_memory_fails_clearly(build, tmp_path, gmemtest_cli):
    """A test that exhausts a 512 MiB guest: the OOM killer takes the test's process, the test
    fails naming the signal, the run has the OOM report as a kernel health finding, and QEMU
    is gone."""
    results = tmp_path / "r"
    proc = gmemtest_cli("vm", "run", "--kernel", str(build.bzimage), "--memory", "512M",
                        "--results", str(results), "--", "-q", "-p", "no:xdist",
                    str(CHECKOUT / "vmimages/provoke/test_provoke_oom.py"))
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "the test process was killed by SIGKILL" in proc.stdout
    assert "kernel: OOM" in proc.stdout
    assert qemu_processes(results) == []


@pytest.mark.needs("built_kernel")
def test_a_test_killed_by_a_signal_is_one_named_failure(build, tmp_path, gmemtest_cli):
    """A test whose process dies of SIGBUS (what a kernel that refuses a host access it should
    allow does to a test) fails alone, named with the signal and the line it died on; the
    tests before and after it still run and report, and the run has a verdict."""
    results = tmp_path / "r"
    proc = gmemtest_cli("vm", "run", "--kernel", str(build.bzimage), "--results",
                        str(results), "--", "-q", "-p", "no:xdist",
                        str(CHECKOUT / "vmimages/provoke/test_provoke_sigbus.py"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 passed, 1 failed" in proc.stdout
    assert re.search(r"failed: .*test_provoke_sigbus: the test process was killed by SIGBUS, "
                     r"at \"[^\"]*test_provoke_sigbus\.py\", line 19", proc.stdout), proc.stdout
    junit = (results / "junit.xml").read_text()
    assert junit.count("<testcase") == 3


@pytest.mark.needs("built_kernel")
def test_a_kernel_crash_fails_its_test_and_the_rest_runs_in_a_fresh_boot(build, tmp_path,
                                                                         gmemtest_cli):
    """A test under which the guest kernel crashes (sysrq 'c': a NULL dereference, then a
    panic): the kernel's failure, not the harness's. The crashed test fails named with the
    report's first line, the tests after it run in a fresh boot (the one before it is not run
    again), and the run is a FAIL (exit 1), not an error."""
    results = tmp_path / "r"
    before, after = (f"tests/test_system.py::{t}" for t in (
        "test_api_version_is_12", "test_unknown_capability_reads_zero"))
    proc = gmemtest_cli("vm", "run", "--kernel", str(build.bzimage), "--results", str(results),
                        "--", "-q", "-p", "no:xdist", before,
                        str(CHECKOUT / "vmimages/provoke/test_provoke_crash.py"), after)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.search(r"FAIL: the kernel crashed under \S*test_provoke_crash\.py::"
                     r"test_provoke_crash: .*sysrq", proc.stdout), proc.stdout
    assert "== run: 2 passed, 1 failed" in proc.stdout, proc.stdout
    rest = (results / "after-crash-1/junit.xml").read_text()
    assert "test_unknown_capability_reads_zero" in rest
    assert "test_api_version_is_12" not in rest
    assert "test_provoke_crash" not in rest
    assert qemu_processes(results) == []


def fail_closed(gmemtest_cli, build, tmp_path, cmdline: str) -> str:
    """The one error line of a boot whose kernel is not what it was asked to be."""
    proc = gmemtest_cli("vm", "run", "--kernel", str(build.bzimage), "--results",
                        str(tmp_path / "r"), "--cmdline", cmdline, "--", "-q", "-p",
                        "no:xdist", "tests/test_system.py::test_api_version_is_12")
    assert proc.returncode == 2, proc.stdout
    return one_error_line(proc)


@pytest.mark.needs("built_kernel")
def test_a_typo_in_the_switchs_name_is_an_error(build, tmp_path, gmemtest_cli):
    """With KVM built in the kernel ignores kvm.gmem_in_place_convertion=1 without a word and
    the boot runs with the switch off: the guest reads the parameter back, and the boot is an
    error naming it and what kvm offers, never a PASS with the in-place tests skipped."""
    line = fail_closed(gmemtest_cli, build, tmp_path, "kvm.gmem_in_place_convertion=1")
    assert "not the kernel the boot asked for" in line, line
    assert "kvm has no parameter gmem_in_place_convertion (it has: " in line, line
    assert "gmem_in_place_conversion" in line.partition("it has: ")[2], line


@pytest.mark.needs("built_kernel")
def test_a_value_the_kernel_refuses_for_the_switch_is_an_error(build, tmp_path, gmemtest_cli):
    """kvm.gmem_in_place_conversion=maybe: the kernel keeps the default and says so in its
    log; the boot is an error naming the parameter, what it reads, and the kernel's word."""
    line = fail_closed(gmemtest_cli, build, tmp_path, "kvm.gmem_in_place_conversion=maybe")
    assert "kvm.gmem_in_place_conversion=maybe did not take" in line, line
    assert "invalid for parameter" in line, line


@pytest.mark.needs("built_kernel")
def test_a_guest_without_dev_kvm_is_an_error(build, tmp_path, gmemtest_cli):
    """KVM is built in, but its vendor module never initialised (its initcall blacklisted), so
    /dev/kvm is missing: an error naming the configuration's promise, not a skip of every
    kernel test."""
    line = fail_closed(gmemtest_cli, build, tmp_path, "initcall_blacklist=svm_init,vmx_init")
    assert re.search(r"CONFIG_KVM=y.* promises \S+, but the kernel answers: /dev/kvm absent",
                     line), line


@pytest.mark.needs("built_kernel")
def test_silent_guest_is_dumped_and_named(build, tmp_path, gmemtest_cli):
    """A guest that prints nothing, not even the init's heartbeat, counts as hung: an NMI makes
    its kernel print every task's stack into the console log, QEMU ends, and one line says so."""
    results = tmp_path / "r"
    proc = gmemtest_cli("vm", "run", "--kernel", str(build.bzimage), "--silence", "20", "--results",
                    str(results), "--", "-q", "-p", "no:xdist",
                    str(CHECKOUT / "vmimages/provoke/test_provoke_hang.py"))
    assert proc.returncode == 2, proc.stdout[-2000:]
    line = one_error_line(proc)
    assert "hang: the guest printed nothing for 20 s" in line, line
    assert "an NMI made its kernel print every task's stack" in line, line
    console = (results / "console.log").read_text(errors="replace")
    assert "Kernel panic - not syncing: NMI" in console
    assert "task:python" in console, console[-3000:]  # the tasks, pytest among them
    assert qemu_processes(results) == []


def start_sleeping_guest(build: kernel.Build, results: Path) -> subprocess.Popen[str]:
    """`gmemtest vm run` of a guest whose init sleeps, returned once its QEMU exists."""
    # A shell without job control starts background commands with SIGINT ignored (so does CI,
    # possibly), and Python then has no KeyboardInterrupt: give the runner the default back.
    proc = subprocess.Popen(
        ["env", "--default-signal=INT",
         sys.executable, "-m", "gmemtest.cli", "vm", "run", "--kernel", str(build.bzimage),
         "--results", str(results), "--cmdline", "init=/usr/bin/sleep", "--cmdline", "3600",
         "--boot-timeout", "300", "--", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CHECKOUT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    for _ in range(100):  # until QEMU runs
        if qemu_processes(results):
            break
        subprocess.run(["sleep", "0.1"])
    assert qemu_processes(results), "QEMU did not start"
    return proc


@pytest.mark.parametrize("delay", [0, 2], ids=["at-spawn", "while-running"])
@pytest.mark.needs("built_kernel")
def test_ctrl_c_reaps_qemu(build, tmp_path, delay):
    """Ctrl-C as soon as QEMU exists (the runner may still be inside Popen) or while the guest
    runs: one line, exit 130, and no QEMU process left."""
    results = tmp_path / "r"
    proc = start_sleeping_guest(build, results)
    subprocess.run(["sleep", str(delay)])
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        states = subprocess.run(["ps", "-o", "pid,stat,wchan:30,etime,args", "--pid",
                                 " ".join([str(proc.pid), *qemu_processes(results)])],
                                capture_output=True, text=True).stdout
        proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's Python stack
        err = proc.communicate()[1]
        for pid in qemu_processes(results):
            os.kill(int(pid), signal.SIGKILL)
        pytest.fail(f"the runner did not exit 60 s after SIGINT\n{states}\n{err}")
    assert proc.returncode == 130
    assert err.strip() == "gmemtest vm run: interrupted", err
    assert qemu_processes(results) == []


@pytest.mark.needs("built_kernel")
def test_killed_runner_takes_qemu_with_it(build, tmp_path):
    """SIGKILL of the runner (a CI job killed, a test timeout) cannot reap QEMU itself: QEMU
    runs with the parent-death signal, so it goes too, rather than spin on an orphaned guest."""
    results = tmp_path / "r"
    proc = start_sleeping_guest(build, results)
    proc.kill()
    proc.communicate()
    for _ in range(100):
        if not qemu_processes(results):
            break
        subprocess.run(["sleep", "0.1"])
    left = qemu_processes(results)
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    assert left == [], "QEMU outlived its runner"


def test_main_job_boots_by_the_kernels_switch(build, tmp_path):
    """The boots follow what the built kernel has: a kernel without
    kvm.gmem_in_place_conversion (vanilla 7.2, or the applied series without per-VM memory
    attributes) boots once; one with it boots on and off, the boot in the switch's default
    state (off with per-VM attributes built in, on without: v8) leaving it alone."""
    assert build.manifest is not None
    config = tmp_path / ".config"

    def boots(switch: bool, vm_attributes: bool) -> tuple[vmtest.Mode, ...]:
        config.write_text(f"CONFIG_KVM_VM_MEMORY_ATTRIBUTES={'y' if vm_attributes else 'n'}\n")
        m = dataclasses.replace(build.manifest, switch=switch, config=str(config))
        return vmtest.modes(dataclasses.replace(build, manifest=m))

    assert boots(False, True) == boots(False, False) == (vmtest.NO_SWITCH,)
    assert boots(True, True) == (vmtest.ON, vmtest.OFF_BY_DEFAULT)
    assert boots(True, False) == (vmtest.ON_BY_DEFAULT, vmtest.OFF)
    assert vmtest.OFF_BY_DEFAULT.cmdline == vmtest.ON_BY_DEFAULT.cmdline == ()
    assert vmtest.OFF.cmdline == (f"{vmtest.PARAM}=0",)


def test_guest_pytest_is_parallel_only_where_vcpus_are(monkeypatch):
    """xdist workers in the guest where its vCPUs run on host threads of their own (KVM,
    multi-threaded TCG); one process under single-threaded TCG, where workers only cost."""
    assert qemu.parallelism(qemu.Accel([], "kvm", parallel=True)) == ["-n", "auto"]
    assert qemu.parallelism(qemu.Accel([], "tcg", parallel=False)) == ["-p", "no:xdist"]
    monkeypatch.setattr(qemu.host, "nested_support", lambda: {
        "can_run_nested": False, "cpu_virt": False, "module": None})
    for thread, parallel in (("single", False), ("multi", True)):
        monkeypatch.setenv("GMEMTEST_TCG_THREAD", thread)
        assert qemu.choose_accel().parallel is parallel


@pytest.mark.parametrize("src, message", [
    ("/nonexistent/linux", "--src /nonexistent/linux: no such directory"),
    ("{tmp}", "not a Linux source tree (no Makefile or virt/kvm/)"),
])
def test_bad_kernel_source_is_one_line(tmp_path, src, message, gmemtest_cli):
    proc = gmemtest_cli("kernel", "build", "--src", src.format(tmp=tmp_path))
    assert proc.returncode == 2
    assert message in one_error_line(proc)


@pytest.mark.needs("built_kernel", "linux_source")
def test_patch_that_does_not_apply_is_one_line(build, tmp_path, gmemtest_cli):
    """A series whose patch does not apply: one line naming it, exit 2, and no half-patched
    tree left in the cache."""
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-bad.patch").write_text(
        "--- a/virt/kvm/guest_memfd.c\n+++ b/virt/kvm/guest_memfd.c\n"
        "@@ -1,3 +1,3 @@\n-this line is not in the file\n+nor is this one\n context\n")
    (patches / "series").write_text("0001-bad.patch\n")
    proc = gmemtest_cli("kernel", "build", "--patch-dir", str(patches))
    assert proc.returncode == 2
    assert f"0001-bad.patch does not apply to linux-source-{BASE}" in one_error_line(proc)
    proc = gmemtest_cli("kernel", "build", "--patch-dir", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert "no such directory" in one_error_line(proc)
    copies = [p for p in cache_dir("src").iterdir() if debian.is_patched_copy(p.name)]
    leftovers = [p for p in copies if not any(p.glob("linux-source-*/.gmemtest-patched"))]
    assert leftovers == []


def test_modes_boot_side_by_side_only_under_single_threaded_tcg(monkeypatch):
    """Each single-threaded TCG guest keeps one core busy: with two cores both modes boot at
    once; KVM or multi-threaded TCG guests use every core already, so they boot one by one;
    GMEMTEST_SERIAL_BOOTS=1 asks for one by one."""
    monkeypatch.setattr(qemu.os, "cpu_count", lambda: 2)
    tcg, kvm = qemu.Accel([], "tcg", parallel=False), qemu.Accel([], "kvm", parallel=True)
    assert qemu.boots_at_once(2, tcg) == 2
    assert qemu.boots_at_once(1, tcg) == 1
    assert qemu.boots_at_once(2, kvm) == 1
    monkeypatch.setattr(qemu.os, "cpu_count", lambda: 1)
    assert qemu.boots_at_once(2, tcg) == 1
    monkeypatch.setattr(qemu.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("GMEMTEST_SERIAL_BOOTS", "1")
    assert qemu.boots_at_once(2, tcg) == 1


@pytest.mark.needs("linux_source")
def test_the_newest_supported_base_and_the_fallback_when_debian_drops_it(gmemtest_cli,
                                                                        tmp_path):
    """The default kernel is Debian's source of the newest base that the suites offer and
    kpatches/ supports: 7.3. In a copy of the checkout where 7.3 is in preview (a PREVIEW file
    in kpatches/7.3), it is 7.2. A private sources list without trixie-backports (where
    Debian has linux-source-7.3) hides 7.3: the default falls back to 7.2 and says so in one
    line, and --base 7.3 ends at its fetch in one line naming what the suites do offer."""
    assert patchset.bases()[-2:] == ["7.2", "7.3"], "kpatches/ moved on"
    proc = gmemtest_cli("kernel", "show")
    assert (proc.returncode, proc.stdout) == (0, "Debian linux-source-7.3 + kpatches/7.3 "
                                                 "(applied)\n"), proc.stderr
    copy = tmp_path / "checkout"
    for part in ("gmemtest", "kpatches", "kconfigs"):
        shutil.copytree(CHECKOUT / part, copy / part, ignore=shutil.ignore_patterns("*.so"))
    (copy / "kpatches/7.3" / patchset.PREVIEW).write_text("not yet: a test fails\n")
    proc = gmemtest_cli("kernel", "show", cwd=copy)
    assert (proc.returncode, proc.stdout) == (0, "Debian linux-source-7.2 + kpatches/7.2 "
                                                 "(applied)\n"), proc.stderr
    hidden = {**os.environ, debian.SUITES_ENV: "unstable forky"}
    proc = gmemtest_cli("kernel", "show", "--kpatches", "v8", env=hidden)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "base: linux-source-7.3 is not in unstable forky (they offer 7.2; kpatches/ supports "
        "7.2, 7.3): taking 7.2", "Debian linux-source-7.2 + kpatches/7.2 (v8)"]
    proc = gmemtest_cli("kernel", "build", "--base", "7.3", env=hidden)
    assert proc.returncode == 2
    assert "linux-source-7.3 is not in unstable forky of the system mirror (they offer " \
        "linux-source 7.2)" in one_error_line(proc)


@pytest.mark.parametrize("args, message", [
    (["--base", "7.1"], "kpatches/ has no patches for the base 7.1 (it has 7.2, 7.3)"),
    (["--base", "seven"], f"--base seven: expected a kernel base such as "
                          f"{patchset.bases()[-1]}, or newest"),
    (["--base", "7.2", "--src", "."], "--base picks Debian's source and --src names a tree"),
])
def test_a_base_mistake_is_one_line(gmemtest_cli, args, message):
    proc = gmemtest_cli("kernel", "show", *args)
    assert proc.returncode == 2
    assert message in one_error_line(proc)


@pytest.mark.timeout(1500)
@pytest.mark.needs("qemu", "linux_source")
def test_a_base_that_contains_the_series_is_tested_as_it_is(tmp_path, gmemtest_cli):
    """The code path for a Debian kernel the series was merged into (7.4): a stand-in base,
    the main job's base with every patch of kpatches/ but the stale MMIO SPTE fix (which no
    revision of the series has), and a patch directory marking each series patch "# in the
    base:" and carrying the fix. The patch set's name says what is carried, the base is
    checked to hold the marked patches, only the fix is applied, and the fix's test passes in
    both modes (without the fix its per-VM attributes variant fails with conversion off). A
    patch marked in the base that is not in it is one line."""
    ks = patchset.kpatches(BASE)
    fix = ks.patch("KVM: x86/mmu: Classify faults on stale MMIO SPTEs of SW-protected VMs")
    series = [p for p in ks.patches if p != fix]

    def patch_dir(name: str, lines: list[str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for p in ks.patches:
            (d / p.name).write_bytes(p.read_bytes())
        (d / "series").write_text("".join(f"{ln}\n" for ln in lines))
        return d

    stand_in = kernel.prepare(kernelspec.KernelSpec(
        kernelspec.Debian(BASE), patchset.directory(patch_dir("stand-in",
                                                              [p.name for p in series]))))
    carrying = patch_dir("carrying", [f"# in the base: {p.name}" for p in series] + [fix.name])
    proc = gmemtest_cli("kernel", "show", "--src", str(stand_in), "--patch-dir", str(carrying))
    assert proc.stdout.strip() == f"{stand_in} + {carrying}: {len(series)} in the base, " \
        f"carrying {fix.name}", proc.stderr
    proc = gmemtest_cli("vm-test", "--src", str(stand_in), "--patch-dir", str(carrying), "--",
                        "-q", "-p", "no:xdist", "-k",
                        "test_private_page_reachable_after_memslot_comes_back", timeout=1400)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for mode in ("on", "off (its default)"):  # each mode runs the variant its route allows
        assert f"== in-place conversion {mode}: 1 passed, 0 failed" in proc.stdout, mode
    wrong = patch_dir("wrong", [f"# in the base: {fix.name}"])
    proc = gmemtest_cli("kernel", "build", "--src", str(stand_in), "--patch-dir", str(wrong))
    assert proc.returncode == 2
    assert f"{fix.name} is marked in the base, but" in one_error_line(proc)


def patch_dir_with(tmp_path: Path, source: Path, path: str, old: str, new: str) -> Path:
    """kpatches/ of the main job's base, and after them one patch that replaces ``old`` with
    ``new`` in ``path`` of the patched tree ``source``: a deliberately broken kernel."""
    before = (source / path).read_text()
    assert before.count(old) == 1, f"{path} changed: the test's anchor {old!r} is gone"
    diff = "".join(difflib.unified_diff(before.splitlines(True),
                                        before.replace(old, new).splitlines(True),
                                        f"a/{path}", f"b/{path}"))
    out = tmp_path / "patches"
    out.mkdir()
    patches = patchset.kpatches(BASE).patches
    series = [p.name for p in patches]
    for p in patches:
        shutil.copy(p, out / p.name)
    (out / "9999-broken.patch").write_text(
        "From: gmemtest <gmemtest@localhost>\nSubject: [PATCH] broken on purpose\n\n---\n"
        + diff)
    (out / "series").write_text("".join(f"{n}\n" for n in [*series, "9999-broken.patch"]))
    return out


@pytest.mark.needs("built_kernel", "linux_source")
def test_a_kernel_whose_vm_attributes_cap_lies_is_an_error(build, tmp_path, gmemtest_cli):
    """Per-VM memory attributes built in, in-place conversion off, and /dev/kvm's
    KVM_CAP_MEMORY_ATTRIBUTES reporting no PRIVATE: a broken kernel, not a reason to skip
    every [vm-attributes] test. The boot in the switch's default state (off) is an error
    naming the contradiction; the boot with it on converts through guest_memfd and passes."""
    assert build.source_path is not None
    patches = patch_dir_with(tmp_path, build.source_path, "virt/kvm/kvm_main.c",
                             "\tcase KVM_CAP_MEMORY_ATTRIBUTES:\n"
                             "\t\treturn kvm_supported_mem_attributes(kvm);",
                             "\tcase KVM_CAP_MEMORY_ATTRIBUTES:\n\t\treturn 0;")
    proc = gmemtest_cli("vm-test", "--patch-dir", str(patches), "--", "-q", "-p", "no:xdist",
                        "tests/test_system.py::test_api_version_is_12", timeout=1800)
    assert proc.returncode == 2, proc.stdout
    line = one_error_line(proc)
    assert re.search(r"1 of 2 boot\(s\) did not run their tests: in-place conversion off "
                     r"\(its default\): not the kernel the boot asked for: "
                     r"CONFIG_KVM_VM_MEMORY_ATTRIBUTES=y with in-place conversion off promises "
                     r"route:vm-attributes, .*KVM_CAP_MEMORY_ATTRIBUTES on /dev/kvm reports no "
                     r"PRIVATE", line), line
    assert "== in-place conversion on: 1 passed" in proc.stdout, proc.stdout
