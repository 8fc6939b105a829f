"""`git bisect run gmemtest bisect-step` finds the commit that broke a conversion rule.

A git repo of Debian's linux-source (the main job's base) with the kpatches series (the applied
form) as commits, and in the middle of the series, right after the patch that makes
conversions to private unmap the host mappings of the pages that change state, a commit that
stops them doing so. Bisecting between that patch (good) and the tip (bad) must name the
breaking commit. Host only: it builds and boots kernels (the Debian source must be in the
cache: the main job fetches it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bases import BASE

from gmemtest.cache import cache_dir
from gmemtest.vmtier import debian, patchset
from gmemtest.vmtier.progress import Progress

pytestmark = pytest.mark.host_only
TESTS = "test_conversion_unmaps_every_process"
UNMAP = ("\t\t\tunmap_mapping_pages(mapping, run_start, run_end - run_start,\n"
         "\t\t\t\t\t    false);\n")
BUILD = ".gmemtest-build"  # in the tree: Kbuild's relative paths let ccache reuse the main job's
GIT = ["git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="module")
def repo() -> Path:
    pristine = [debian.fetch_source(BASE, Progress(quiet=True)).path]
    dest = cache_dir("bisect-test") / "linux"
    ready = dest / ".git/gmemtest-ready"  # holds the series it was made from
    series = "".join(p.read_text() for p in patchset.kpatches(BASE).patches)
    if not ready.exists() or ready.read_text() != series:
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        dest.mkdir()
        subprocess.run(["cp", "-a", f"{pristine[-1]}/.", str(dest)], check=True)
        git(dest, "init", "-q")
        git(dest, "add", "-f", "-A")
        git(dest, "commit", "-q", "-m", f"linux-source-{BASE}")
        gmem = dest / "virt/kvm/guest_memfd.c"
        patches = list(patchset.kpatches(BASE).patches)
        while UNMAP not in gmem.read_text():  # apply the series up to the unmapping patch
            git(dest, "am", "-q", str(patches.pop(0)))
        gmem.write_text(gmem.read_text().replace(UNMAP, "\t\t\tcontinue;\n"))
        git(dest, "commit", "-q", "-a", "-m", "KVM: guest_memfd: Skip unmapping (the bug)")
        assert patches, "the unmapping patch is the last of the series: nothing follows it"
        for patch in patches:
            git(dest, "am", "-q", str(patch))
        (dest / ".git/gmemtest-breaking").write_text(str(len(patches)))
        ready.write_text(series)
    else:
        # A run that was interrupted may have left a bisection or a detached HEAD behind.
        git(dest, "bisect", "reset")
        git(dest, "checkout", "-q", "-f", "master")
    return dest


@pytest.mark.timeout(1800)
@pytest.mark.needs("linux_source")
def test_bisect_names_the_breaking_commit(repo):
    """The range is the unmapping patch (good) to the tip (bad): the breaking commit follows
    the good one, and the rest of the series follows it."""
    after = int((repo / ".git/gmemtest-breaking").read_text())
    breaking = git(repo, "rev-parse", f"HEAD~{after}")
    good = git(repo, "rev-parse", f"HEAD~{after + 1}")
    git(repo, "bisect", "start", "HEAD", good)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [*GIT, "-C", str(repo), "bisect", "run", sys.executable, "-m", "gmemtest.cli",
             "bisect-step", "--src", str(repo), "--build-dir", str(repo / BUILD), "-k", TESTS,
             "--", "-q", "-p", "no:xdist"],
            capture_output=True, text=True, timeout=1800)
    finally:
        elapsed = time.monotonic() - start
        log = git(repo, "bisect", "log")
        git(repo, "bisect", "reset")
    print(proc.stdout[-3000:], proc.stderr[-2000:], f"bisect took {elapsed:.0f} s", sep="\n")
    assert f"{breaking} is the first bad commit" in proc.stdout, log


@pytest.mark.parametrize("case", ["not a tree", "gcc missing"])
@pytest.mark.needs("linux_source")
def test_a_broken_harness_aborts_the_bisection(case, tmp_path):
    """A --src that is not a kernel tree, or a host without gcc, is no fault of the commit
    under test: 128 (git bisect run stops) with one line, never 125 (skip this commit), which
    would make git bisect skip every commit."""
    src = tmp_path if case == "not a tree" else debian.fetch_source(
        BASE, Progress(quiet=True)).path
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)} if case == "gcc missing" \
        else None
    proc = subprocess.run([sys.executable, "-m", "gmemtest.cli", "bisect-step", "--src",
                           str(src), "--", "-q"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 128, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert ("not a Linux source tree" if case == "not a tree" else "'make' not found") \
        in lines[0] or "'gcc' not found" in lines[0], lines
