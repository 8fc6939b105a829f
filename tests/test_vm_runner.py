"""The VM tier on the host: boots of a built kernel that must fail, and fail clearly.

These need QEMU and a kernel built by `gmemtest kernel build` (the main job builds one); inside
the guest there is neither, and they skip saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gmemtest import kconfig, qemu, report
from gmemtest.cache import cache_dir
from gmemtest.errors import GmemtestError

CHECKOUT = Path(__file__).resolve().parent.parent


def newest_build() -> dict | None:
    manifests = sorted(cache_dir("build").glob("*/gmemtest-manifest.json"),
                       key=lambda p: p.stat().st_mtime)
    return json.loads(manifests[-1].read_text()) if manifests else None


@pytest.fixture(scope="module")
def build() -> dict:
    if os.environ.get("GMEMTEST_IN_GUEST"):
        pytest.skip("QEMU runner tests run on the host (no qemu-system-x86_64 in the guest)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (scripts/bootstrap --vm installs it)")
    b = newest_build()
    if b is None:
        pytest.skip("needs a kernel built by `gmemtest kernel build` (make vm-test builds it)")
    return b


def qemu_processes(results: Path) -> list[str]:
    """QEMU processes sharing ``results`` (this test's boot, not another one running)."""
    out = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*path={results}"],
                         capture_output=True, text=True).stdout
    return out.split()


def test_real_warn_fails_a_passing_run(build, tmp_path):
    """lkdtm makes the guest kernel log a real WARN from a test that passes: the run fails on
    kernel health, naming the report and the test that was running."""
    run = qemu.boot(Path(build["bzImage"]), [str(CHECKOUT / "vmimages/provoke")],
                    results=tmp_path / "results", echo=False)
    outcome = report.evaluate("provoke", run)
    assert outcome.passed == 1 and outcome.failed == 0
    assert not outcome.ok
    first = outcome.findings[0]
    assert first.kind == "WARNING" and "lkdtm" in first.line, first
    assert any("test_provoke_warning" in t for t in first.tests)
    assert outcome.verdict().startswith("FAIL: kernel health: WARNING during ")


def test_hanging_boot_is_one_line_and_leaves_no_qemu(build, tmp_path):
    """An init that never prints the banner hits the boot limit: one error line naming the
    limit, exit 2, and no QEMU process left behind."""
    proc = subprocess.run(
        [sys.executable, "-m", "gmemtest.cli", "vm", "run", "--kernel", build["bzImage"],
         "--boot-timeout", "8", "--results", str(tmp_path / "r"), "--cmdline",
         "init=/usr/bin/sleep", "--cmdline", "3600", "--", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "boot timeout: no init banner within 8 s" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert qemu_processes(tmp_path / "r") == []


def test_qemu_absent_is_one_line(build, tmp_path):
    env = dict(os.environ, PATH="/nonexistent")
    proc = subprocess.run([sys.executable, "-m", "gmemtest.cli", "vm", "run", "--kernel",
                           build["bzImage"], "--results", str(tmp_path), "--", "-q"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gmemtest vm: error: qemu-system-x86_64 not found: apt-get "
                                   "install qemu-system-x86 (or run scripts/bootstrap --vm)")


def test_missing_kernel_image_is_one_line(tmp_path):
    with pytest.raises(GmemtestError, match="does not exist: build one with"):
        qemu.boot(tmp_path / "bzImage", [], results=tmp_path)


def test_dropped_kconfig_option_is_named(build, tmp_path):
    """A fragment asking for an option whose dependency is off fails the configuration step,
    naming the option and the dependency with its value."""
    src = Path(build["source"]["path"])
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_DEBUG_FS=y\nCONFIG_LKDTM=y\n")
    with pytest.raises(GmemtestError) as e:
        kconfig.generate(src, tmp_path / "build", [frag], dict(os.environ))
    msg = str(e.value)
    assert "CONFIG_LKDTM=y (got n; needs" in msg and "RUNTIME_TESTING_MENU=n" in msg
    assert "CONFIG_DEBUG_FS" not in msg
