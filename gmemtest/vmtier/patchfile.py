"""A change to a few files of a kernel tree as the one ``git format-patch`` patch a developer
posts or applies with ``git am`` (a generated selftest): made in a scratch repository of those
files alone, so the tree itself is never touched."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from gmemtest import tool


def format_patch(tree: Path, changes: dict[str, str], message: str, author: tuple[str, str],
                 out: Path) -> Path:
    """The patch, in ``out``, that gives the files of ``tree`` named in ``changes`` (paths
    relative to the tree) their new text; ``message``: subject line, blank line, body; signed
    off by ``author`` (name, email)."""
    name, email = author
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gmemtest-patch-") as tmp:
        repo = Path(tmp)

        def git(*args: str) -> str:
            return tool.run(["git", "-C", repo, *args], f"git {args[0]}", env=env).stdout

        git("init", "-q")
        for f in changes:
            if (tree / f).is_file():
                (repo / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tree / f, repo / f)
        git("add", "-A")
        git("commit", "-q", "--allow-empty", "-m", "base")
        for f, text in changes.items():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            (repo / f).write_text(text)
        git("add", "-A")
        (repo / ".git" / "gmemtest-message").write_text(message)
        git("commit", "-q", "-s", "-F", str(repo / ".git" / "gmemtest-message"))
        names = git("format-patch", "-1", "--no-numbered", "--zero-commit", "--no-signature",
                    "-o", str(out.resolve())).split()
    return Path(names[0])
