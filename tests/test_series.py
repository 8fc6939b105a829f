"""Posted series as a kernel developer meets them, in every shape they hold one: `git
format-patch --stdout` output with and without a cover letter and without Message-Ids (a
series before it is posted), a list archive's mbox with a review reply interleaved and the
messages shuffled, `b4 am -o -` output, and an mbox holding two versions. Then walks as the
0-day bot does them: a series with a build error in the middle, one with a behavioural break in
the middle (its conversions stop unmapping host pages), and one whose tip fails a test that the
base fails too (a bug older than the series, which no patch may be blamed for); `gmemtest diff`
of kpatches/ against the break; and the inputs that must end in one line."""

from __future__ import annotations

import email
import email.policy
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bases import BASE

from gmemtest.cache import cache_dir
from gmemtest.errors import GmemtestError
from gmemtest.vmtier import debian, kernel, kernelspec, patchset, series
from gmemtest.vmtier.progress import Progress

pytestmark = pytest.mark.host_only

GIT = ["git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost"]
COVER = f"KVM: guest_memfd: In-place conversion for {BASE}"
REVIEWER = "Rev Iewer <rev@example.org>"
UNMAPS = "test_conversion_unmaps_every_process"
# The stale MMIO SPTE bug of 7.2 and 7.3 that kpatches/' "Classify faults on stale MMIO SPTEs"
# fixes: it fails on the base too.
STALE = "test_private_page_reachable_after_memslot_comes_back"
# The quick suite for walks and diffs: the test the break breaks, and two it leaves alone.
QUICK = [UNMAPS, "test_noop_conversion_succeeds", "test_api_version_is_12"]
# The unmapping line of kpatches/' "Convert memory in place with KVM_SET_MEMORY_ATTRIBUTES2",
# which the break removes.
UNMAP = "\t\tunmap_mapping_pages(mapping, run->start, run->end - run->start,\n\t\t\t\t    false);\n"
KPATCHES = patchset.kpatches(BASE)


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"git {' '.join(args[:2])}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def base() -> debian.Source:
    return debian.fetch_source(BASE, Progress(quiet=True))


@pytest.fixture(scope="module")
def repo(base, tmp_path_factory) -> Path:
    """A git tree of the base with kpatches/ as commits (git am), as a developer has it."""
    base_repo, _ = series.base_repo(base.path, base.name, Progress(quiet=True))
    tree = tmp_path_factory.mktemp("dev") / "linux"
    subprocess.run(["cp", "-al", f"{base_repo}/.", str(tree)], check=True)
    git(tree, "config", "core.trustctime", "false")  # hard links: other copies touch ctime
    git(tree, "am", "-q", *map(str, KPATCHES.patches))
    git(tree, "tag", "kpatches")
    return tree


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small repository: one file, then five commits changing it, tagged ``kpatches`` (what
    the mbox parser reads, without a kernel tree)."""
    tree = tmp_path_factory.mktemp("small")
    git(tree, "init", "-q")
    (tree / "gmem.c").write_text("int a;\n")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    for i in range(1, 6):
        with open(tree / "gmem.c", "a") as f:
            f.write(f"int step{i};\n")
        git(tree, "commit", "-q", "-a", "-m", f"KVM: guest_memfd: Step {i}")
    git(tree, "tag", "kpatches")
    return tree


def format_patch(tree: Path, upto: str, count: int, prefix: str, out: Path, *,
                 cover: bool = True, thread: bool = True, review: int | None = None,
                 shuffle: int | None = None) -> Path:
    """`git format-patch [--cover-letter] [--thread] --subject-prefix PREFIX` of the ``count``
    commits up to ``upto``, as one mbox; a review reply to patch ``review``; the messages
    shuffled. Without --thread git writes no Message-Id at all."""
    text = git(tree, "format-patch", *(["--cover-letter"] if cover else []),
               *(["--thread"] if thread else []), "--subject-prefix", prefix,
               "--stdout", f"{upto}~{count}..{upto}")
    text = text.replace("*** SUBJECT HERE ***", COVER)
    # Message-Ids as a separate posting has them (git derives them from the commit and the
    # second it runs in).
    text = text.replace("@localhost>", f".{re.sub(r'[^a-z0-9]', '', prefix.lower())}@localhost>")
    messages = re.split(r"(?m)^(?=From [0-9a-f]{40} )", text)[1:]
    if review is not None:
        msg = email.message_from_string(messages[review], policy=email.policy.default)
        messages.append(
            "From reviewer Thu Jan  1 00:00:00 1970\n"
            f"From: {REVIEWER}\nSubject: Re: {msg['Subject']}\n"
            f"Message-Id: <review-{review}@example.org>\nIn-Reply-To: {msg['Message-Id']}\n"
            f"References: {msg['Message-Id']}\nDate: Sun, 29 Nov 2026 12:00:00 +0000\n\n"
            "> the patch\n\nLooks right to me.\n\n"
            f"Reviewed-by: {REVIEWER}\n\n")
    if shuffle is not None:
        random.Random(shuffle).shuffle(messages)
    out.write_text("".join(m if m.endswith("\n\n") else m + "\n" for m in messages))
    return out


@pytest.fixture(scope="module")
def v3(repo, tmp_path_factory) -> Path:
    """kpatches/ posted as v3 to a list: cover letter, a review reply to patch 2, the
    messages shuffled, as a list archive serves them."""
    return format_patch(repo, "kpatches", len(KPATCHES.patches), "PATCH v3",
                        tmp_path_factory.mktemp("mbox") / "v3.mbox", review=2, shuffle=7)


def applies_as_kpatches(s: series.Series, base: debian.Source) -> Path:
    """The tree of the series holds every file kpatches/ touch as the Debian tree the main
    job patches has it."""
    tree = series.apply(s, base.path, base.name, Progress(quiet=True))
    patched = kernel.prepare(kernelspec.KernelSpec(kernelspec.Debian(BASE), KPATCHES),
                             Progress(quiet=True))
    touched = {line.split(" b/")[-1] for p in KPATCHES.patches
               for line in p.read_text().splitlines() if line.startswith("diff --git ")}
    assert touched
    assert all((tree / f).read_bytes() == (patched / f).read_bytes() for f in touched)
    return tree


def test_list_archive_v3_with_a_review_applies_as_kpatches(v3, base):
    """b4 finds the series (cover letter, order, the review's trailer) and git am applies it."""
    s = series.read(v3)
    count = len(KPATCHES.patches)
    assert (s.version, s.count, s.subject) == (3, count, COVER)
    assert s.msgid.startswith("cover.")
    tree = applies_as_kpatches(s, base)
    assert f"Reviewed-by: {REVIEWER}" in git(tree, "log", "-1", "--format=%B",
                                             f"HEAD~{count - 2}")


@pytest.mark.parametrize("cover", [True, False], ids=["cover-letter", "no-cover-letter"])
def test_format_patch_without_message_ids_applies(repo, base, tmp_path, cover):
    """A series before it is posted: `git format-patch --stdout`, with or without a cover
    letter, and no Message-Id headers (git writes none without --thread). Each message gets
    an id made from its content; the series is named by its cover letter or first patch."""
    count = len(KPATCHES.patches)
    mbox = format_patch(repo, "kpatches", count, "PATCH", tmp_path / "fp.mbox", cover=cover,
                        thread=False)
    assert "Message-Id" not in mbox.read_text()
    assert "Message-ID" not in mbox.read_text()
    s = series.read(mbox)
    first = git(repo, "log", "-1", "--format=%s", f"kpatches~{count - 1}").strip()
    assert (s.version, s.count) == (1, count)
    assert s.subject == (COVER if cover else first)
    assert s.msgid.startswith("gmemtest-")
    assert series.read(mbox) == s, "the ids made are not the same twice"
    applies_as_kpatches(s, base)


def test_b4_am_output_applies(v3, base, tmp_path):
    """What `b4 am -o -` writes (the am-ready mbox, no cover letter, trailers folded in) is a
    series of its own shape."""
    proc = subprocess.run([sys.executable, "-m", "b4.command", "--offline-mode", "-n", "-q",
                           "am", "-C", "-m", str(v3), "-o", "-"], capture_output=True,
                          cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                             "GIT_CONFIG_NOSYSTEM": "1"})
    assert proc.returncode == 0, proc.stderr
    mbox = tmp_path / "am.mbox"
    mbox.write_bytes(proc.stdout)
    s = series.read(mbox)
    assert (s.version, s.count) == (3, len(KPATCHES.patches))
    tree = applies_as_kpatches(s, base)
    assert f"Reviewed-by: {REVIEWER}" in git(tree, "log", "--format=%B", "-20")


def test_two_versions_in_one_mbox(small, tmp_path):
    """An mbox holding v2 (3 patches) and v3 (all 5): the newest unless a version is asked
    for; a version it does not hold is one line naming those it does."""
    count = 5
    v2 = format_patch(small, f"kpatches~{count - 3}", 3, "PATCH v2", tmp_path / "v2.mbox")
    v3 = format_patch(small, "kpatches", count, "PATCH v3", tmp_path / "v3.mbox")
    both = tmp_path / "both.mbox"
    both.write_text(v3.read_text() + v2.read_text())
    assert (series.read(both).version, series.read(both).count) == (3, count)
    assert (series.read(both, 2).version, series.read(both, 2).count) == (2, 3)
    with pytest.raises(GmemtestError, match="holds version.s. 2, 3"):
        series.read(both, 4)


def test_incomplete_series_is_one_line(small, tmp_path):
    """A version with a patch missing names the missing patch."""
    mbox = format_patch(small, "kpatches~2", 3, "PATCH v2", tmp_path / "v2.mbox", cover=False)
    text = mbox.read_text()
    parts = re.split(r"(?m)^(?=From [0-9a-f]{40} )", text)
    mbox.write_text("".join(p for p in parts if "[PATCH v2 2/3]" not in p))
    with pytest.raises(GmemtestError, match=r"v2 is incomplete \(patch\(es\) 2 of 3"):
        series.read(mbox)


def trees() -> list[Path]:
    """The series mboxes of the trees in the cache (other tests may be adding theirs)."""
    return [p / "series.mbox" for p in cache_dir("series").glob("tree-*") if p.is_dir()]


@pytest.mark.parametrize("case, message", [
    ("empty", "no patch series in it"),
    ("text", "no patch series in it"),
    ("not applying", 'patch 1/1 "KVM: guest_memfd: Convert memory in place with '
                     'KVM_SET_MEMORY_ATTRIBUTES2" fails'),
])
def test_bad_series_is_one_line_and_leaves_nothing(repo, tmp_path, gmemtest_cli, case,
                                                   message):
    """An empty file, a text file, and a series that does not apply to the base (kpatches/' third
    patch without the two under it): one line, exit 2, no tree left in the cache."""
    mbox = tmp_path / "series.mbox"
    if case == "empty":
        mbox.write_text("")
    elif case == "text":
        mbox.write_text("This is not a patch series.\nJust text.\n")
    else:
        # kpatches/' third patch alone: it needs the first two under it.
        count = len(KPATCHES.patches)
        format_patch(repo, f"kpatches~{count - 3}", 1, "PATCH RFC", mbox)
    proc = gmemtest_cli("series", "apply", str(mbox), timeout=600)
    assert proc.returncode == 2, proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[")]  # no progress
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gmemtest series apply: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not [t for t in trees()
                if t.exists() and "patchrfc@localhost" in t.read_text(errors="replace")]


@pytest.fixture(scope="module")
def broken(repo, tmp_path_factory) -> Path:
    """kpatches 1-3, then a commit that stops conversions to private from unmapping host
    pages, then kpatches 4: the break in the middle of a 5-patch series."""
    tree = tmp_path_factory.mktemp("broken") / "linux"
    count = len(KPATCHES.patches)
    subprocess.run(["cp", "-al", f"{repo}/.", str(tree)], check=True)
    git(tree, "checkout", "-q", "-b", "broken", f"kpatches~{count - 3}")
    gmem = tree / "virt/kvm/guest_memfd.c"
    text = gmem.read_text()
    assert UNMAP in text
    gmem.unlink()  # the file is hard-linked with the repo's: write a new one
    gmem.write_text(text.replace(UNMAP, ""))
    git(tree, "commit", "-q", "-a", "-m", "KVM: guest_memfd: Skip unmapping the host's pages")
    git(tree, "cherry-pick", f"kpatches~{count - 4}")
    return format_patch(tree, "HEAD", 5, "PATCH v1", tmp_path_factory.mktemp("mb") / "b.mbox")


def walk(gmemtest_cli, mbox: Path,
         tests: list[str] | None = None) -> tuple[subprocess.CompletedProcess[str], Path]:
    select = tests or ["-k", " or ".join(QUICK)]
    proc = gmemtest_cli("series", "walk", str(mbox), "--", "-q", "-p", "no:xdist", *select,
                        timeout=1700)
    print(proc.stdout[-5000:], proc.stderr[-3000:])
    out = Path(re.search(r"reports: (\S+)/walk.md", proc.stdout).group(1))
    return proc, out


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_walk_bisects_to_the_behavioural_break(broken, gmemtest_cli):
    """Every prefix builds; the tip fails the unmapping test in the mode that converts in
    place; the walk bisects over the series and names patch 4/5 and the failing test."""
    proc, out = walk(gmemtest_cli, broken)
    assert proc.returncode == 1
    rows = re.findall(r"^(\d+)/5 +[0-9a-f]{12} +(\S+) ", proc.stdout, re.M)
    assert rows == [(str(i), "ok") for i in range(1, 6)], rows
    assert re.search(r'first bad patch: 4/5 "KVM: guest_memfd: Skip unmapping the host\'s '
                     rf'pages" \([0-9a-f]{{12}}\); failing: .*{UNMAPS}', proc.stdout)
    junit = (out / "junit.xml").read_text()
    assert junit.count('classname="series.build"') == 5
    assert junit.count('classname="series.suite"') == 2


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_walk_names_the_patch_that_breaks_the_build(repo, tmp_path, gmemtest_cli):
    """A 3-patch series whose middle patch adds an #error: its build fails with the
    compiler's error named, and the walk names it as the first bad patch."""
    tree = tmp_path / "linux"
    count = len(KPATCHES.patches)
    subprocess.run(["cp", "-al", f"{repo}/.", str(tree)], check=True)
    git(tree, "checkout", "-q", "-b", "nobuild", f"kpatches~{count - 1}")
    stats = tree / "virt/kvm/binary_stats.c"
    text = stats.read_text()
    stats.unlink()
    stats.write_text(text + "\n#error gmemtest: a build error in the middle of the series\n")
    git(tree, "commit", "-q", "-a", "-m", "KVM: Break the build")
    git(tree, "cherry-pick", f"kpatches~{count - 2}")
    mbox = format_patch(tree, "HEAD", 3, "PATCH", tmp_path / "nobuild.mbox")
    proc, _ = walk(gmemtest_cli, mbox)
    assert proc.returncode == 1
    assert re.search(r"build of 2/3 failed: .*#error gmemtest: a build error", proc.stdout)
    assert 'first bad patch: 2/3 "KVM: Break the build"' in proc.stdout
    assert "its build fails" in proc.stdout


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_walk_blames_no_patch_for_a_failure_older_than_the_series(repo, tmp_path,
                                                                    gmemtest_cli):
    """kpatches/ 1 to 3 without the 4th, "Classify faults on stale MMIO SPTEs", the fix of the
    base's stale MMIO SPTE bug: at the tip the
    per-VM attributes variant of its test fails with in-place conversion off, and it fails on
    the base (Debian's) too. The walk runs that exact test, parameter included, on the
    base first and says the failure predates the series: no patch is blamed, no bisection."""
    count = len(KPATCHES.patches)
    mbox = format_patch(repo, f"kpatches~{count - 3}", 3, "PATCH v2", tmp_path / "old.mbox")
    stale = f"tests/test_routing.py::{STALE}[vm-attributes]"
    proc, out = walk(gmemtest_cli, mbox, [stale, "tests/test_system.py::test_api_version_is_12"])
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.search(rf"fails before the series \(on the base too\): "
                     rf"{re.escape(stale)} \(in-place conversion off", proc.stdout), proc.stdout
    assert "no patch is blamed: every failure at the tip predates the series" in proc.stdout
    assert "first bad patch" not in proc.stdout
    assert not (out / "bisect.log").exists()


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_diff_lists_exactly_the_tests_that_break(broken, gmemtest_cli, tmp_path):
    """`gmemtest diff kpatches/ BREAK`: the unmapping test, in the mode that converts in
    place, is the one difference; the others agree."""
    out = tmp_path / "diff"
    proc = gmemtest_cli("diff", "kpatches", str(broken), "--out", str(out), "--", "-q",
                        "-p", "no:xdist", "-k", " or ".join(QUICK), timeout=1700)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    assert proc.returncode == 1, proc.stderr[-2000:]
    diffs = json.loads((out / "diff.json").read_text())["differences"]
    assert [(d["mode"], d["test"].split("::")[-1]) for d in diffs] == \
        [("in-place conversion on", UNMAPS)], diffs
    assert diffs[0]["a"] == "passed"
    assert diffs[0]["b"].startswith("failed")
    page = (out / "diff.html").read_text()
    assert UNMAPS in page
    assert "<style>" in page
    if shutil.which("chromium"):
        shot = subprocess.run([str(Path(__file__).parent.parent / "scripts/screenshot-report"),
                               str(out / "diff.html")], capture_output=True, text=True)
        assert shot.returncode == 0, shot.stderr


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_main_job_on_a_posted_series(v3, gmemtest_cli):
    """`gmemtest vm-test --series MBOX` builds the posting and runs the suite in both modes;
    the report names the series."""
    proc = gmemtest_cli("vm-test", "--series", str(v3), "--", "-q", "-p", "no:xdist", "-k",
                        " or ".join(QUICK), timeout=1700)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert f'kernel:   series v3 "{COVER}"' in proc.stdout
    assert proc.stdout.count("PASS") >= 2


def test_diff_pairs_boots_by_mode_and_names_each_side():
    """`diff` compares boots of the same mode; a kernel without the switch (one boot) is
    compared with each of the other's; a test one side lacks is 'absent' there; differing
    kernel health is a difference of its own."""
    from gmemtest.results import comparison
    from gmemtest.results.health import Finding
    from gmemtest.results.outcome import Outcome, TestResult
    from gmemtest.results.report import BootReport
    from gmemtest.workflows import diff

    def side(name: str, *boots: BootReport) -> diff.Side:
        spec = kernelspec.KernelSpec(kernelspec.Prebuilt(Path(name), None))
        return diff.Side(name, kernel.Build(spec, Path(name), None), list(boots))

    on = BootReport("in-place conversion on", None, [TestResult("t::a", Outcome.PASSED),
                                                     TestResult("t::b", Outcome.SKIPPED, "x")])
    off = BootReport("in-place conversion off", None, [TestResult("t::a", Outcome.PASSED)])
    vanilla = BootReport("no in-place conversion switch", None,
                         [TestResult("t::a", Outcome.FAILED, "assert 0 == 90\nmore")],
                         [Finding("WARNING", "WARNING: at mm/x.c:1")])
    diffs = comparison.differences(side("A", on, off).reports, side("B", vanilla).reports)
    assert [(d.mode, d.test, d.said(d.a), d.said(d.b)) for d in diffs] == [
        ("in-place conversion on / no in-place conversion switch", "t::a", "passed",
         "failed: assert 0 == 90 / more"),
        ("in-place conversion on / no in-place conversion switch", "t::b", "skipped: x",
         "absent"),
        ("in-place conversion on / no in-place conversion switch", "(kernel health)",
         "no finding", "WARNING: WARNING: at mm/x.c:1"),
        ("in-place conversion off / no in-place conversion switch", "t::a", "passed",
         "failed: assert 0 == 90 / more"),
        ("in-place conversion off / no in-place conversion switch", "(kernel health)",
         "no finding", "WARNING: WARNING: at mm/x.c:1")]
    assert comparison.differences([on, off], [on, off]) == []


@pytest.mark.timeout(1800)
@pytest.mark.needs("qemu", "linux_source")
def test_diff_whose_sides_did_not_run_gives_no_verdict(gmemtest_cli, tmp_path):
    """pytest refuses its arguments in every boot of both sides (kpatches/, and the same
    kernel as a built one, so that nothing is built twice): no test ran, so there is no
    verdict: one line saying so, exit 2, the reports marked, never 'no test's outcome
    differs'. --out after the positionals is honoured."""
    out = tmp_path / "diff"
    built = kernel.resolve(kernelspec.KernelSpec(kernelspec.Debian(BASE), KPATCHES),
                           Progress(quiet=True))
    proc = gmemtest_cli("diff", "kpatches", str(built.bzimage), "--out", str(out), "--",
                        "--no-such-pytest-option", timeout=1700)
    assert proc.returncode == 2, proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[")]  # no progress
    assert len(lines) == 1
    assert lines[0].startswith("gmemtest diff: error: side A (kpatches): "
                               "2 of 2 boot(s) did not run their tests")
    assert "pytest exited 4 in the guest" in lines[0]
    assert proc.stdout.startswith("NO VERDICT: ")
    assert "no test's outcome differs" not in          proc.stdout
    assert json.loads((out / "diff.json").read_text())["verdict"] is None
