"""The lines a series adds, patch by patch and hunk by hunk, and where each one is in the tree
with every patch applied (the tip, which is what a coverage build measures).

A patch's added line may be changed or removed by a later patch; `git blame` of the tip says,
for each line, which commit brought it and at which line of that commit's version. So the
series is read from its series tree (gmemtest.vmtier.kernel.series_tree), one commit per patch.
"""

from __future__ import annotations

import re
from pathlib import Path

from gmemtest import tool
from gmemtest.errors import GmemtestError
from gmemtest.results.patches import HUNK, Hunk, Line, Patch


def _git(repo: Path, *args: str) -> str:
    return tool.git(repo, *args).stdout


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
    proc = tool.git(tree, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False)
    if proc.returncode:
        raise GmemtestError(f"--since {rev}: no such commit in {tree}")
    sha = proc.stdout.strip()
    if tool.git(tree, "merge-base", "--is-ancestor", sha, "HEAD", check=False).returncode:
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
