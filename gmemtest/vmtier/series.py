"""A posted patch series as the kernel under test: an mbox of ``[PATCH vN k/n]`` messages, as
``b4 am`` writes it or a list archive serves it (a cover letter or not, replies and review
trailers mixed in, messages in any order, several versions of the series).

b4 (its library, offline) finds the series in the mbox, picks the version, orders the patches
and folds the review trailers in; ``git am`` applies them onto the base, one commit per patch,
in a tree of the cache: Debian's linux-source-7.2 (made a git repository once) or ``--src``."""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import json
import logging
import mailbox
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gmemtest.cache import cache_dir, locked
from gmemtest.errors import GmemtestError

from . import kernel
from .progress import Progress

log = logging.getLogger(__name__)
GIT = ["git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost",
       "-c", "advice.detachedHead=false"]
READY = kernel.SERIES_INFO  # in a series tree once every patch applied: what it holds


@dataclass(frozen=True)
class Series:
    """One version of a posted series: what reports name it by, and its patches ready for
    ``git am`` (b4's order, with the trailers of the review replies)."""

    subject: str
    version: int
    msgid: str
    count: int
    mbox: str
    patches: tuple[bytes, ...]

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("patches")
        return d

    def title(self) -> str:
        return f'v{self.version} "{self.subject}" ({self.count} patches, <{self.msgid}>)'


def read(path: Path, version: int | None = None) -> Series:
    """The series in the mbox at ``path``: the newest version, or ``version``."""
    import b4  # imported here: it sets up logging and config on import, and only this needs it

    if not path.is_file():
        raise GmemtestError(f"--series {path}: no such file")
    messages = [email.message_from_bytes(m.as_bytes(), _class=email.message.EmailMessage,
                                         policy=email.policy.default)
                for m in mailbox.mbox(path, create=False)]
    b4.can_network = False  # everything is in the mbox: no lore, no patchwork
    b4._setup_main_config()  # what `b4 am` does first: its defaults, and the user's git config
    lmbx = b4.LoreMailbox()
    for msg in messages:
        lmbx.add_message(msg)
    if not lmbx.series:
        raise GmemtestError(f"--series {path}: no patch series in it (expected an mbox of "
                            "[PATCH] messages, as `b4 am -o -` or a list archive writes)")
    versions = sorted(lmbx.series)
    want = versions[-1] if version is None else version
    if want not in lmbx.series:
        raise GmemtestError(f"--series-version {version}: {path} holds version(s) "
                            f"{', '.join(map(str, versions))}")
    lser = lmbx.get_series(revision=want, codereview_trailers=False)
    if lser is None or not lser.complete:
        have = [i for i, p in enumerate(lser.patches) if p is not None and i] if lser else []
        missing = sorted(set(range(1, (lser.expected if lser else 0) + 1)) - set(have))
        raise GmemtestError(f"--series {path}: v{want} is incomplete (patch(es) "
                            f"{', '.join(map(str, missing))} missing)")
    am = lser.get_am_ready(noaddtrailers=False, addmysob=False, addlink=False)
    first = lser.patches[0] or lser.patches[1]
    assert first is not None
    return Series(subject=lser.subject or "(no subject)", version=want, msgid=first.msgid,
                  count=lser.expected, mbox=str(path.resolve()),
                  patches=tuple(m.as_bytes(policy=email.policy.SMTP) for m in am))


def _git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*GIT, "-C", str(tree), *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise GmemtestError(f"git {' '.join(args[:2])} failed in {tree}: "
                            f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return proc


def base_repo(src: Path | None, progress: Progress) -> tuple[Path, str]:
    """A git repository of the base to apply a series onto, and its name: ``src`` when it is
    one (its HEAD), else a repository of ``src`` or of Debian's linux-source-7.2 made once in
    the cache (its files hard-linked, git replaces rather than rewrites them)."""
    if src is not None and (src / ".git").exists():
        kernel.user_source(src)  # one line when it is not a kernel tree
        head = _git(src, "rev-parse", "HEAD").stdout.strip()
        return src.resolve(), f"{src} at {head[:12]}"
    source = kernel.debian_source(progress) if src is None else kernel.user_source(src)
    repo = cache_dir("series") / f"base-{_digest(str(source.path))}" / "linux"
    with locked(repo.parent.with_suffix(".lock")):
        if not (repo / ".git" / "gmemtest-base").exists():
            progress.phase("series", f"making a git repository of {source.version} (once)")
            shutil.rmtree(repo, ignore_errors=True)
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", f"{source.path}/.", str(repo)], check=True)
            for stale in repo.glob(".gmemtest-*"):  # builds of a patched copy, not the base
                shutil.rmtree(stale, ignore_errors=True)
            _git(repo, "init", "-q")
            # Loose objects stay: copies hard-link them, and a background gc would pack and
            # delete them under a copy being made.
            _git(repo, "config", "gc.auto", "0")
            # Its files are hard links to the extracted source, of which other copies are made.
            _git(repo, "config", "core.trustctime", "false")
            _git(repo, "add", "-f", "-A")
            _git(repo, "commit", "-q", "-m", f"{source.version}")
            (repo / ".git" / "gmemtest-base").write_text(source.version + "\n")
    return repo, source.version


def apply(series: Series, src: Path | None, progress: Progress) -> Path:
    """A tree of the cache holding ``series`` on its base as one commit per patch (the base
    is HEAD~count). A series that does not apply: one line naming the first patch that fails
    and the file, and no tree left behind."""
    base, base_name = base_repo(src, progress)
    base_head = _git(base, "rev-parse", "HEAD").stdout.strip()
    key = _digest(base_head, *series.patches)
    tree = cache_dir("series") / f"tree-{key}" / "linux"
    with locked(tree.parent.with_suffix(".lock")):
        if (tree / READY).exists():
            return tree
        shutil.rmtree(tree.parent, ignore_errors=True)
        tree.parent.mkdir(parents=True)
        progress.phase("series", f"git am {series.title()} onto {base_name}")
        try:
            subprocess.run(["cp", "-al", f"{base}/.", str(tree)], check=True)
            # Its files are hard links: another copy made meanwhile changes their ctime.
            _git(tree, "config", "core.trustctime", "false")
            _git(tree, "checkout", "-q", "--detach", base_head)
            mbox = tree.parent / "series.mbox"
            mbox.write_bytes(b"".join(_mbox_entry(p) for p in series.patches))
            proc = _git(tree, "am", "-q", str(mbox), check=False)
            if proc.returncode:
                raise GmemtestError(_am_failure(series, base_name, tree, proc))
        except BaseException:
            shutil.rmtree(tree.parent, ignore_errors=True)
            raise
        info = {"series": series.describe(), "base": base_name, "base_commit": base_head}
        (tree / READY).write_text(json.dumps(info, indent=1) + "\n")
        _exclude(tree, READY)
    log.info("series %s applied onto %s in %s", series.title(), base_name, tree)
    return tree


def _mbox_entry(message: bytes) -> bytes:
    body = message.replace(b"\r\n", b"\n")
    body = re.sub(rb"^(>*From )", rb">\1", body, flags=re.M)
    return b"From gmemtest Thu Jan  1 00:00:00 1970\n" + body.rstrip(b"\n") + b"\n\n"


def _am_failure(series: Series, base: str, tree: Path,
                proc: subprocess.CompletedProcess[str]) -> str:
    """One line: which patch did not apply, and where."""
    text = proc.stdout + proc.stderr
    failed = re.search(r"^Patch failed at (\d+) (.*)$", text, re.M)
    where = re.search(r"^error: (patch failed: \S+|\S+: does not exist in index|"
                      r"\S+: patch does not apply)", text, re.M)
    _git(tree, "am", "--abort", check=False)
    which = f"patch {int(failed.group(1))}/{series.count} \"{failed.group(2)}\"" if failed \
        else "a patch"
    return (f"series {series.title()} does not apply onto {base}: {which} fails"
            + (f" ({where.group(1)})" if where else "") + "; nothing was kept")


def _exclude(tree: Path, name: str) -> None:
    """Keep gmemtest's files out of the tree's git status (a dirty tree would look patched)."""
    exclude = tree / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    for pattern in (name, ".gmemtest-*"):
        if pattern not in lines:
            lines.append(pattern)
    exclude.write_text("\n".join(lines) + "\n")


def info(tree: Path) -> dict[str, Any]:
    """What a series tree holds (the series, its base), as :func:`apply` recorded it."""
    data: dict[str, Any] = json.loads((tree / READY).read_text())
    return data


def commits(tree: Path, count: int) -> list[tuple[str, str]]:
    """The series' commits in a series tree, oldest first: (sha, subject)."""
    out = _git(tree, "log", "--reverse", "--format=%H %s", f"-{count}", "HEAD").stdout
    return [(line[:40], line[41:]) for line in out.splitlines()]


def checkout(tree: Path, commit: str) -> None:
    _git(tree, "checkout", "-q", "--detach", commit)


def tree(mbox: Path, *, version: int | None = None, src: Path | None = None,
         progress: Progress | None = None) -> Path:
    """The tree of a posted series (read, then applied once): what ``--series`` builds."""
    progress = progress or Progress()
    return apply(read(mbox, version), src, progress)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
