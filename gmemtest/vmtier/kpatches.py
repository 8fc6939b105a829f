"""kpatches/ kept the way the kernel's stable queue keeps its patches, so that what a port to a
newer base changed can be read, and nothing else shows as changed:

- a patch is named after its subject (``kvm-guest_memfd-track-...patch``), never numbered: the
  base's series file gives the order, and code names a patch by its subject;
- it is written without what changes when the patch does not: no commit sha (``From 0000...``),
  no ``[PATCH k/n]`` numbering, no ``index`` lines, no git version signature;
- a patch of a newer base that is not byte for byte the older base's copy of the same patch
  says where it came from and what its port changed, in an origin paragraph of its message
  (:func:`origin`: ``[ 7.3: adapted from kpatches/7.2/NAME: what changed ]``, wrapped);
- ``kpatches/OLD..NEW.range-diff`` is `git range-diff` of the two bases' series, made on the
  files they touch, with the digests of the series it was made from.

:func:`problems` checks all of it (`gmemtest kpatches check`, part of `make lint`): a patch
edited in one base and not the other, or without its range-diff made again, is drift.
:func:`export` writes a base's patches from a branch (a tree whose last commits are the series),
the way they are kept; :func:`range_diff` makes the range-diff."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from gmemtest import tool
from gmemtest.errors import GmemtestError

from . import patchset
from .checkout import KPATCHES
from .patchset import PatchSet, subject

ZERO_FROM = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001"
# An adapted patch's origin, in its message (checkpatch takes the line that starts with the path
# and ends with ":" however long):
#   [ 7.3: adapted from
#     kpatches/7.2/NAME.patch:
#     what the port changed, wrapped ]
ORIGIN = re.compile(r"^\[ (?P<base>\d+\.\d+): adapted from\n  kpatches/(?P<older>\d+\.\d+)/"
                    r"(?P<name>[\w.+-]+\.patch):\n(?P<what>(?:  .*\n)*?  .*?) ?\]$", re.M)


def origin(base: str, older: str, name: str, what: str) -> str:
    """The origin paragraph of a patch of ``base`` adapted from kpatches/OLDER/NAME."""
    lines = textwrap.wrap(f"{what.strip()} ]", 70)
    return "\n".join([f"[ {base}: adapted from", f"  kpatches/{older}/{name}:",
                      *(f"  {ln}" for ln in lines)])
INDEX_LINE = re.compile(r"^index [0-9a-f]+\.\.[0-9a-f]+(?: [0-7]{6})?\n", re.M)
SIGNATURE = re.compile(r"\n-- \n\d+(?:\.\d+)+\S*\n*\Z")
# The commits of a range-diff are made at one fixed time: its shas change only with the series.
FIXED_DATE = "2000-01-01T00:00:00Z"


def file_name(subject_line: str) -> str:
    """The file a patch with this subject is kept in."""
    return re.sub(r"[^a-z0-9_]+", "-", subject_line.lower()).strip("-") + ".patch"


def kept(text: str) -> str:
    """A ``git format-patch`` patch in the kept form (the module's docstring)."""
    lines = text.split("\n", 1)
    if lines[0].startswith("From ") and len(lines) == 2:
        text = ZERO_FROM + "\n" + lines[1]
    subj = subject(text)
    text = re.sub(r"^Subject: .*(?:\n[ \t].*)*", lambda _: f"Subject: [PATCH] {subj}", text,
                  count=1, flags=re.M)
    text = INDEX_LINE.sub("", text)
    return SIGNATURE.sub("\n", text)


def bases(root: Path = KPATCHES) -> list[str]:
    """Every base kpatches/ holds patches for (those in preview too), oldest first."""
    return patchset.bases(root, preview=True)


def _listed(series_file: Path) -> list[str]:
    """Every patch a series file names, to apply or marked in the base."""
    names, marked = patchset.listed(series_file.read_text())
    return [*names, *marked]


def range_diff_path(older: str, newer: str, root: Path = KPATCHES) -> Path:
    return root / f"{older}..{newer}.range-diff"


def _made_from(older: PatchSet, newer: PatchSet) -> str:
    """The range-diff's first line: the series it was made from, by digest."""
    return (f"# git range-diff of {older.name} ({older.digest}) and {newer.name} "
            f"({newer.digest}), remade by `gmemtest kpatches range-diff`\n")


def problems(root: Path = KPATCHES) -> list[str]:
    """Everything in kpatches/ not kept as the module's docstring says, one line each."""
    out: list[str] = []
    by_subject: dict[str, dict[str, tuple[Path, str]]] = {}
    found = bases(root)
    for base in found:
        directory = root / base
        listed: set[str] = set()
        for series_file in sorted(directory.glob("series*")):
            for name in _listed(series_file):
                listed.add(name)
                if not (directory / name).is_file():
                    out.append(f"{series_file}: names {name}, which is not there")
        by_subject[base] = {}
        for p in sorted(directory.glob("*.patch")):
            text = p.read_text()
            subj = subject(text)
            by_subject[base][subj] = (p, text)
            if p.name not in listed:
                out.append(f"{p}: in no series file")
            if p.name != file_name(subj):
                out.append(f"{p}: to be named {file_name(subj)}, after its subject")
            if kept(text) != text:
                out.append(f"{p}: not in the kept form (a commit sha, [PATCH k/n], index "
                           "lines or a signature): write it with `gmemtest kpatches export`")
    for older, newer in zip(found, found[1:], strict=False):
        for subj, (p, text) in by_subject[newer].items():
            origin = ORIGIN.search(text)
            mine = by_subject[older].get(subj)
            if mine is None:
                if origin is not None:
                    out.append(f"{p}: its origin names kpatches/{origin['older']}/"
                               f"{origin['name']}, but {older} has no patch of its subject")
                continue
            if origin is None and text != mine[1]:
                out.append(f"{p}: differs from {mine[0]} and says nowhere why: add its origin "
                           f"([ {newer}: adapted from kpatches/{older}/{mine[0].name}: WHAT "
                           "CHANGED ], wrapped as kpatches.origin() writes it), or make it the "
                           "same")
            elif origin is not None and (origin["older"], origin["name"]) != (older,
                                                                               mine[0].name):
                out.append(f"{p}: its origin names kpatches/{origin['older']}/"
                           f"{origin['name']}, not kpatches/{older}/{mine[0].name}")
        rd = range_diff_path(older, newer, root)
        try:
            made_from = _made_from(patchset.read(root / older / "series", f"kpatches/{older}"),
                                   patchset.read(root / newer / "series", f"kpatches/{newer}"))
        except GmemtestError:  # a series file naming a missing patch: said above
            continue
        if not rd.is_file():
            out.append(f"{rd}: missing: make it with `gmemtest kpatches range-diff {older} "
                       f"{newer}`")
        elif rd.read_text().split("\n", 1)[0] + "\n" != made_from:
            out.append(f"{rd}: made from other patches than kpatches/{older} and "
                       f"kpatches/{newer} hold now: make it again with `gmemtest kpatches "
                       f"range-diff {older} {newer}`")
    return out


@dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote: the patches, in order, and those it removed."""

    written: list[Path]
    removed: list[Path]


# A hunk's header: where it starts (an offset on another base) and the function git names
# after it (which depends on the diff driver the tree's .gitattributes picks).
HUNK_HEADER = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@.*$", re.M)


def _kept_copy(text: str, base: str, root: Path) -> str:
    """What the patch ``text`` exported for ``base`` is kept as: the copy kpatches/ holds
    already, or else the older base's, when the two differ only in their hunks' headers (the
    copy applies with offsets); else ``text``."""
    found = bases(root)
    name = file_name(subject(text))
    places = [root / base / name]
    if base in found and found.index(base) > 0:
        places.append(root / found[found.index(base) - 1] / name)
    for copy in (p for p in places if p.is_file()):
        held = copy.read_text()
        if HUNK_HEADER.sub("@@", held) == HUNK_HEADER.sub("@@", text):
            return held
    return text


def export(tree: Path, count: int, base: str, root: Path = KPATCHES) -> Exported:
    """The last ``count`` commits of ``tree`` (a branch of the series) as kpatches/BASE: each
    patch in the kept form (the copy held already, or the older base's, where they differ
    only in the hunks' headers), the series file's names replaced (its comments kept),
    patches it no longer names removed."""
    directory = root / base
    if not (directory / "series").is_file():
        raise GmemtestError(f"kpatches/{base}: no such base (a directory with a series file)")
    with tempfile.TemporaryDirectory(prefix="gmemtest-export-") as tmp:
        tool.git(tree, "format-patch", "-q", "--zero-commit", "--no-numbered",
                 "--no-signature", "-o", tmp, f"HEAD~{count}..HEAD")
        texts = [kept(p.read_text()) for p in sorted(Path(tmp).glob("*.patch"))]
    written = []
    for text in texts:
        path = directory / file_name(subject(text))
        path.write_text(_kept_copy(text, base, root))
        written.append(path)
    series_file = directory / "series"
    comments = [ln for ln in series_file.read_text().splitlines() if ln.startswith("#")
                and not ln.startswith("# in the base:")]
    series_file.write_text("\n".join([*comments, *(p.name for p in written)]) + "\n")
    named = {n for f in directory.glob("series*") for n in _listed(f)}
    removed = [p for p in directory.glob("*.patch") if p.name not in named]
    for p in removed:
        p.unlink()
    return Exported(written, removed)


def range_diff(older: str, newer: str, sources: dict[str, Path],
               root: Path = KPATCHES) -> Path:
    """``kpatches/OLDER..NEWER.range-diff``: `git range-diff` of the two bases' series, each
    applied onto the files the two series touch as its base (``sources``) has them."""
    sets = {b: patchset.read(root / b / "series", f"kpatches/{b}") for b in (older, newer)}
    touched = sorted({m for ps in sets.values() for p in ps.patches
                      for m in re.findall(r"^\+\+\+ b/(\S+)$", p.read_text(), re.M)})
    env = {**os.environ, "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    with tempfile.TemporaryDirectory(prefix="gmemtest-range-diff-") as tmp:
        repo = Path(tmp)
        tool.git(repo, "init", "-q")
        for b in (older, newer):
            tool.git(repo, "checkout", "-q", "--orphan", f"base-{b}")
            tool.git(repo, "rm", "-rfq", "--ignore-unmatch", ".")
            for f in touched:
                if (sources[b] / f).is_file():
                    (repo / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(sources[b] / f, repo / f)
            tool.git(repo, "add", "-A")
            tool.git(repo, "commit", "-q", "-m", f"the files the series touch, as {b} has "
                     "them", env=env)
            tool.git(repo, "tag", f"base-{b}")
            tool.git(repo, "am", "-q", *(str(p) for p in sets[b].patches), env=env)
            tool.git(repo, "tag", f"tip-{b}")
        text = tool.git(repo, "range-diff", "--no-color", f"base-{older}..tip-{older}",
                        f"base-{newer}..tip-{newer}").stdout
    path = range_diff_path(older, newer, root)
    path.write_text(_made_from(sets[older], sets[newer]) + text)
    return path
