"""The lines a series adds, patch by patch and hunk by hunk, and where each one is in the tree
with every patch applied (the tip, which is what a coverage build measures).

A patch's added line may be changed or removed by a later patch; `git blame` of the tip says,
for each line, which commit brought it and at which line of that commit's version. So the
series is made commits: a posted series already is (its tree, gmemtest.vmtier.series); a patch
set is applied with git am onto the files it touches, taken from its base, in a small
repository of the cache.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from gmemtest.cache import cache_dir, locked
from gmemtest.errors import GmemtestError
from gmemtest.results.patches import HUNK, Hunk, Line, Patch

from .patchset import PatchSet

GIT = ["git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost",
       "-c", "core.quotepath=off"]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode:
        raise GmemtestError(f"git {' '.join(args[:2])} in {repo}: "
                            f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return proc.stdout


def touched(patches: PatchSet) -> list[str]:
    """The files a patch set changes (new side)."""
    files: dict[str, None] = {}
    for p in patches.patches:
        for m in re.finditer(r"^\+\+\+ b/(\S+)$", p.read_text(errors="replace"), re.M):
            files[m.group(1)] = None
    return list(files)


def repo_of_patchset(base: Path, patches: PatchSet) -> Path:
    """A repository holding the files ``patches`` touch as ``base`` has them, then one commit
    per patch (made once, in the cache)."""
    key = hashlib.sha256(f"{base}\0{patches.digest}".encode()).hexdigest()[:16]
    repo = cache_dir("coverage") / f"lines-{key}"
    with locked(repo.with_suffix(".lock")):
        if (repo / ".git" / "gmemtest-ready").exists():
            return repo
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        _git(repo, "init", "-q")
        for f in touched(patches):
            if (base / f).is_file():
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(base / f, repo / f)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", "base")
        for p in patches.patches:
            _git(repo, "am", "-q", str(p))
        (repo / ".git" / "gmemtest-ready").write_text(patches.name + "\n")
    return repo


def lines(repo: Path, count: int) -> list[Patch]:
    """The last ``count`` commits of ``repo`` as patches, each added line placed at the tip."""
    log = _git(repo, "log", "--reverse", "--format=%H %s", f"-{count}", "HEAD").splitlines()
    patches = [Patch(i, line[41:], line[:40]) for i, line in enumerate(log, 1)]
    by_commit = {p.commit: p for p in patches}
    for p in patches:
        p.hunks = _hunks(_git(repo, "show", "--format=", "-U3", "--no-color", p.commit))
    # (commit, file, line in that commit's version) -> line at the tip
    at_tip: dict[tuple[str, str, int], int] = {}
    files = {h.file for p in patches for h in p.hunks}
    for f in files:
        if not (repo / f).is_file():
            continue
        blame = _git(repo, "blame", "--porcelain", "--", f)  # the working copy: what is built
        for m in re.finditer(r"^([0-9a-f]{40}) (\d+) (\d+)", blame, re.M):
            if m.group(1) in by_commit:
                at_tip[(m.group(1), f, int(m.group(2)))] = int(m.group(3))
    for p in patches:
        for h in p.hunks:
            new = int(HUNK.match(h.header).group(3))  # type: ignore[union-attr]
            for line in h.lines:
                if line.kind == "+":
                    line.tip = at_tip.get((p.commit, h.file, new))
                if line.kind != "-":
                    new += 1
    return patches


def check_since(tree: Path, rev: str) -> str:
    """The commit ``rev`` names in ``tree``, an ancestor of its HEAD (one line otherwise)."""
    if not (tree / ".git").exists():
        raise GmemtestError(f"--since {rev}: {tree} is not a git repository")
    proc = subprocess.run([*GIT, "-C", str(tree), "rev-parse", "--verify", "-q",
                           f"{rev}^{{commit}}"], capture_output=True, text=True)
    if proc.returncode:
        raise GmemtestError(f"--since {rev}: no such commit in {tree}")
    sha = proc.stdout.strip()
    if subprocess.run([*GIT, "-C", str(tree), "merge-base", "--is-ancestor", sha, "HEAD"],
                      capture_output=True).returncode:
        raise GmemtestError(f"--since {rev}: not an ancestor of {tree}'s HEAD")
    return sha


def count_since(tree: Path, base: str) -> int:
    """How many commits HEAD of ``tree`` has after ``base`` (its series, when linear)."""
    return int(_git(tree, "rev-list", "--count", f"{base}..HEAD").strip())


def files_since(tree: Path, base: str) -> list[str]:
    """The files the commits after ``base`` and the working copy change."""
    return [f for f in _git(tree, "diff", "--name-only", base, "--").splitlines() if f]


def _hunks(diff: str) -> list[Hunk]:
    hunks: list[Hunk] = []
    file = ""
    for line in diff.splitlines():
        if line.startswith("+++ "):
            file = line[6:] if line.startswith("+++ b/") else ""
        elif line.startswith("--- ") or line.startswith("diff --git") or \
                line.startswith("index ") or line.startswith(("new file", "deleted file")):
            continue
        elif HUNK.match(line):
            if file:
                hunks.append(Hunk(file, line))
        elif hunks and file and line[:1] in ("+", "-", " "):
            hunks[-1].lines.append(Line(line[0], line[1:]))
    return hunks
