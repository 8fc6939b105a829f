"""kpatches/ is kept as the stable queue keeps its patches (gmemtest/vmtier/kpatches.py): named
by subject, without shas, numbering or index lines, the same in every base unless an origin
line says what the port changed, and the range-diff between the bases current. The check runs
in `make lint`; here it is shown to catch each kind of drift, on small made-up bases."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gmemtest.vmtier import kernel, kernelspec, kpatches, patchset
from gmemtest.vmtier.checkout import KPATCHES
from gmemtest.vmtier.progress import Progress

pytestmark = pytest.mark.host_only

GIT_PATCH = """From 1234567890abcdef1234567890abcdef12345678 Mon Sep 17 00:00:00 2001
From: gmemtest <gmemtest@localhost>
Date: Wed, 25 Nov 2026 02:19:49 +0000
Subject: [PATCH 02/18] KVM: guest_memfd: Do one thing, and say so in a
 subject long enough to fold

The message.

Signed-off-by: gmemtest <gmemtest@localhost>
---
 virt/kvm/guest_memfd.c | 1 +
 1 file changed, 1 insertion(+)

diff --git a/virt/kvm/guest_memfd.c b/virt/kvm/guest_memfd.c
index 87f60f9..cfbc08e 100644
--- a/virt/kvm/guest_memfd.c
+++ b/virt/kvm/guest_memfd.c
@@ -1,2 +1,3 @@
 a
+b
 c
--{space}
2.39.5

""".replace("{space}", " ")


def test_a_format_patch_patch_is_kept_without_what_changes_when_it_does_not():
    text = kpatches.kept(GIT_PATCH)
    assert text.startswith(kpatches.ZERO_FROM + "\n")
    assert "Subject: [PATCH] KVM: guest_memfd: Do one thing, and say so in a subject long " \
        "enough to fold\n" in text
    assert "\nindex " not in text
    assert "2.39.5" not in text
    assert text.endswith(" c\n")
    assert kpatches.kept(text) == text


def test_an_origin_paragraph_reads_back_and_its_lines_fit_checkpatch():
    """checkpatch takes a long line in a message only when it starts with a path and ends with
    a colon: the origin's path line is one, the rest is wrapped."""
    name = "kvm-guest_memfd-track-shareability-per-page-in-the-inode.patch"
    text = kpatches.origin("7.3", "7.2", name, "what the port changed, " * 6)
    m = kpatches.ORIGIN.search(text)
    assert m is not None, text
    assert (m["base"], m["older"], m["name"]) == ("7.3", "7.2", name)
    long = [ln for ln in text.splitlines() if len(ln) > 75]
    assert long == [f"  kpatches/7.2/{name}:"]


def test_a_patch_is_named_after_its_subject():
    assert kpatches.file_name(kpatches.subject(GIT_PATCH)) == \
        "kvm-guest_memfd-do-one-thing-and-say-so-in-a-subject-long-enough-to-fold.patch"


def test_the_project_s_kpatches_are_kept():
    """What `make lint` runs on the checkout."""
    assert kpatches.problems(KPATCHES) == []


@pytest.fixture
def queue(tmp_path: Path) -> Path:
    """Two bases, 1.0 and 1.1, each with one patch kept, the same in both, and their
    range-diff made from them (its content is git's; only its first line is checked)."""
    text = kpatches.kept(GIT_PATCH)
    name = kpatches.file_name(kpatches.subject(text))
    for base in ("1.0", "1.1"):
        (tmp_path / base).mkdir()
        (tmp_path / base / name).write_text(text)
        (tmp_path / base / "series").write_text(f"# the series\n{name}\n")
    from gmemtest.vmtier import patchset

    sets = [patchset.read(tmp_path / b / "series", f"kpatches/{b}") for b in ("1.0", "1.1")]
    kpatches.range_diff_path("1.0", "1.1", tmp_path).write_text(
        kpatches._made_from(*sets) + "1: 0 = 1: 0 KVM\n")
    return tmp_path


def only(queue: Path) -> Path:
    return next((queue / "1.1").glob("*.patch"))


def test_a_kept_queue_has_no_problem(queue):
    assert kpatches.problems(queue) == []


def test_a_patch_edited_in_one_base_without_an_origin_line_is_drift(queue):
    p = only(queue)
    p.write_text(p.read_text().replace("+b\n", "+B\n"))
    found = kpatches.problems(queue)
    assert any("says nowhere why" in f for f in found), found


def test_an_origin_line_names_the_older_copy_and_the_range_diff_must_be_made_again(queue):
    p = only(queue)
    origin = kpatches.origin("1.1", "1.0", p.name, "b is B on 1.1") + "\n\n"
    p.write_text(p.read_text().replace("+b\n", "+B\n")
                 .replace("Signed-off-by:", origin + "Signed-off-by:"))
    found = kpatches.problems(queue)
    assert len(found) == 1, found
    assert "range-diff" in found[0], found
    assert "made from other patches" in found[0], found


def test_an_origin_line_naming_another_patch_is_a_problem(queue):
    p = only(queue)
    origin = kpatches.origin("1.1", "1.0", "other.patch", "b is B on 1.1") + "\n\n"
    p.write_text(p.read_text().replace("Signed-off-by:", origin + "Signed-off-by:"))
    found = kpatches.problems(queue)
    assert any("not kpatches/1.0/" in f for f in found), found


def test_a_numbered_sha_carrying_patch_is_a_problem(queue):
    p = only(queue)
    numbered = queue / "1.1" / "0001-KVM-guest_memfd-Do-one-thing.patch"
    numbered.write_text(GIT_PATCH)
    p.unlink()
    (queue / "1.1" / "series").write_text(f"{numbered.name}\n")
    found = kpatches.problems(queue)
    assert any("to be named" in f for f in found), found
    assert any("not in the kept form" in f for f in found), found


def test_a_series_naming_a_missing_patch_and_a_patch_in_no_series(queue):
    p = only(queue)
    shutil.move(p, p.with_name("stray.patch"))
    found = kpatches.problems(queue)
    assert any("which is not there" in f for f in found), found
    assert any("stray.patch: in no series file" in f for f in found), found


@pytest.mark.timeout(900)
@pytest.mark.needs("linux_source")
def test_the_newest_base_is_what_its_branch_exports(tmp_path):
    """kpatches/ of the main job's base, applied as commits onto Debian's source (its branch,
    a series tree) and written back the way they are kept, is byte for byte what the checkout
    holds: the copies have not drifted from the branch they stand for."""
    root = tmp_path / "kpatches"
    shutil.copytree(KPATCHES, root)
    base = patchset.bases()[-1]
    tree = kernel.series_tree(kernelspec.from_options(base=base), Progress(quiet=True))
    done = kpatches.export(tree.path, tree.count, base, root)
    assert done.removed == []
    for p in done.written:
        assert p.read_bytes() == (KPATCHES / base / p.name).read_bytes(), p.name
    assert kpatches.problems(root) == []


@pytest.mark.parametrize("args, said", [
    (["range-diff", "9.9", "7.3"], "9.9: kpatches/ has no patches for it"),
    (["range-diff", "7.3", "7.2"], "the older base first"),
    (["export", "7.3"], "the following arguments are required: --from"),
    (["export", "7.3", "--from", "/nonexistent"], "--from /nonexistent: no such directory"),
    (["check", "--", "-k", "x"], "takes no pytest arguments"),
])
def test_kpatches_mistakes_are_one_line_before_any_fetch(gmemtest_cli, args, said):
    proc = gmemtest_cli("kpatches", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert said in proc.stderr, proc.stderr
