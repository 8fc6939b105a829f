"""A posted patch series as the kernel under test: an mbox of ``[PATCH vN k/n]`` messages in any
shape developers hold one (``git format-patch --stdout`` output with or without a cover letter
and Message-Id headers, ``b4 am -o -`` output, a list archive with review replies interleaved,
several versions of the series in one file).

The mbox is read once, here: which versions it holds, the one to take, whether every patch of it
is there. Messages without a Message-Id (``git format-patch`` writes none) get one made from
their content. b4's command line (offline, with a configuration of its own: no user or system
git config, no network, no attestation) then orders the patches and folds the review trailers
in; ``git am`` applies them onto the base, one commit per patch, in a tree of the cache:
Debian's linux-source (made a git repository once) or ``--src``."""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import json
import logging
import mailbox
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from gmemtest import tool
from gmemtest.cache import cache_dir, locked
from gmemtest.errors import BuildFailed, BuildStage, GmemtestError
from gmemtest.results import posted as posted_of
from gmemtest.results.posted import PostedInfo
from gmemtest.results.shape import check, read_json

from .patchset import PatchSet
from .progress import Progress

log = logging.getLogger(__name__)
READY = ".gmemtest-series.json"  # in a series tree once every patch applied: what it holds
# "[RFC PATCH net-next v3 02/19] subject": the tags, then the subject.
SUBJECT = re.compile(r"^\s*\[(?P<tags>[^\]]*\bPATCH\b[^\]]*)\]\s*(?P<title>.*)$", re.I | re.S)
# b4's configuration: its own, given through git's global config file.
B4_CONFIG = """[b4]
\tattestation-policy = off
\tattestation-checkmarks = plain
[user]
\tname = gmemtest
\temail = gmemtest@localhost
"""


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

    def title(self) -> str:
        return f'v{self.version} "{self.subject}" ({self.count} patches, <{self.msgid}>)'


@dataclass(frozen=True)
class _Posted:
    """A [PATCH] message of the mbox: its version, its place k of n, subject and Message-Id."""

    version: int
    index: int
    count: int
    title: str
    msgid: str


def _tags(subject: str) -> tuple[int, int, int, str] | None:
    """(version, k, n, title) of a patch subject; None for anything else (replies too)."""
    subject = " ".join(subject.split())
    if re.match(r"^(Re|Fwd?):", subject, re.I):
        return None
    m = SUBJECT.match(subject)
    if m is None:
        return None
    tags = m.group("tags")
    version = re.search(r"\bv(\d+)\b", tags, re.I)
    place = re.search(r"\b(\d+)/(\d+)\b", tags)
    k, n = (int(place.group(1)), int(place.group(2))) if place else (1, 1)
    return int(version.group(1)) if version else 1, k, n, m.group("title").strip()


def _messages(path: Path) -> list[email.message.EmailMessage]:
    """Every message of the mbox at ``path``, each with a Message-Id (one made from its bytes
    where it has none)."""
    try:
        raw = [m.as_bytes() for m in mailbox.mbox(path, create=False)]
    except (OSError, UnicodeError, ValueError) as e:
        raise GmemtestError(f"--series {path}: not an mbox ({e})") from None
    out = []
    for data in raw:
        try:
            msg = email.message_from_bytes(data, _class=email.message.EmailMessage,
                                           policy=email.policy.default)
            if msg.get("Message-Id") is None:
                msg["Message-Id"] = f"<gmemtest-{hashlib.sha256(data).hexdigest()[:20]}@localhost>"
            str(msg["Subject"] or "")
            str(msg["Message-Id"])
        except (ValueError, TypeError, IndexError, LookupError, UnicodeError) as e:
            raise GmemtestError(f"--series {path}: a message that cannot be read ({e}): "
                                "expected an mbox of [PATCH] messages") from None
        out.append(msg)
    return out


def read(path: Path, version: int | None = None) -> Series:
    """The series in the mbox at ``path``: the newest version, or ``version``."""
    if not path.is_file():
        raise GmemtestError(f"--series {path}: no such file")
    messages = _messages(path)
    posted: list[_Posted] = []
    for msg in messages:
        tags = _tags(str(msg["Subject"] or ""))
        if tags is not None and (tags[1] == 0 or "\n--- " in _body(msg) or "diff --git" in
                                 _body(msg)):
            posted.append(_Posted(*tags, msgid=str(msg["Message-Id"]).strip().strip("<>")))
    if not any(p.index for p in posted):
        raise GmemtestError(f"--series {path}: no patch series in it (expected an mbox of "
                            "[PATCH] messages, as `git format-patch --stdout`, `b4 am -o -` "
                            "or a list archive writes)")
    versions = sorted({p.version for p in posted if p.index})
    want = versions[-1] if version is None else version
    if want not in versions:
        raise GmemtestError(f"--series-version {version}: {path} holds version(s) "
                            f"{', '.join(map(str, versions))}")
    mine = [p for p in posted if p.version == want]
    count = max(p.count for p in mine)
    have = {p.index for p in mine}
    missing = sorted(set(range(1, count + 1)) - have)
    if missing:
        raise GmemtestError(f"--series {path}: v{want} is incomplete (patch(es) "
                            f"{', '.join(map(str, missing))} of {count} missing)")
    first = min(mine, key=lambda p: p.index)
    patches = _b4_am(path, messages, want)
    if len(patches) != count:
        raise GmemtestError(f"--series {path}: b4 found {len(patches)} patch(es) of v{want}, "
                            f"the subjects say {count}")
    return Series(subject=first.title or "(no subject)", version=want, msgid=first.msgid,
                  count=count, mbox=str(path.resolve()), patches=patches)


def _body(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(("plain",)) if msg.is_multipart() else msg
    try:
        content = part.get_content() if part is not None else ""
    except (LookupError, KeyError, ValueError, UnicodeError):
        payload = part.get_payload(decode=True) if part is not None else b""
        content = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _b4_am(path: Path, messages: list[email.message.EmailMessage],
           version: int) -> tuple[bytes, ...]:
    """b4 am on the messages (offline, its own configuration): version ``version``'s patches
    in order, trailers folded in, as ``git am`` takes them."""
    with tempfile.TemporaryDirectory(prefix="gmemtest-b4-") as tmp:
        work = Path(tmp)
        normal = work / "in.mbox"
        box = mailbox.mbox(normal)
        for msg in messages:
            box.add(msg.as_bytes(policy=email.policy.SMTP))
        box.flush()
        box.close()
        (work / "gitconfig").write_text(B4_CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_"))}
        env.update(HOME=str(work), XDG_CONFIG_HOME=str(work / "config"),
                   GIT_CONFIG_GLOBAL=str(work / "gitconfig"), GIT_CONFIG_NOSYSTEM="1")
        cmd = [sys.executable, "-m", "b4.command", "--offline-mode", "--no-interactive",
               "--no-stdin", "--quiet", "am", "--no-cache", "--use-local-mbox", str(normal),
               "--outdir", str(work / "out"), "--use-version", str(version), "--no-cover",
               "--mbox-name", "series"]
        proc = tool.run(cmd, "b4 am", cwd=work, env=env, check=False)
        out = sorted((work / "out").glob("*.mbx")) if (work / "out").is_dir() else []
        if proc.returncode or not out:
            raise GmemtestError(f"--series {path}: b4 am could not prepare v{version}: "
                                f"{tool.last_line(proc)}")
        return tuple(m.as_bytes(policy=email.policy.SMTP)
                     for m in mailbox.mbox(out[0], create=False))


def base_repo(base: Path, name: str, progress: Progress) -> tuple[Path, str]:
    """A git repository of the kernel tree ``base`` (called ``name``) to apply a series onto,
    and its name: ``base`` itself when it is one (its HEAD), else a repository of it made once
    in the cache (its files hard-linked, git replaces rather than rewrites them)."""
    if (base / ".git").exists():
        head = tool.git(base, "rev-parse", "HEAD").stdout.strip()
        return base, f"{base} at {head[:12]}"
    repo = cache_dir("series") / f"base-{_digest(str(base))}" / "linux"
    with locked(repo.parent.with_suffix(".lock")):
        if not (repo / ".git" / "gmemtest-base").exists():
            progress.phase("series", f"making a git repository of {name} (once)")
            shutil.rmtree(repo, ignore_errors=True)
            repo.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", f"{base}/.", str(repo)], check=True)
            for stale in repo.glob(".gmemtest-*"):  # builds of a patched copy, not the base
                shutil.rmtree(stale, ignore_errors=True)
            tool.git(repo, "init", "-q")
            # Loose objects stay: copies hard-link them, and a background gc would pack and
            # delete them under a copy being made.
            tool.git(repo, "config", "gc.auto", "0")
            # Its files are hard links to the extracted source, of which other copies are made.
            tool.git(repo, "config", "core.trustctime", "false")
            tool.git(repo, "add", "-f", "-A")
            tool.git(repo, "commit", "-q", "-m", name)
            (repo / ".git" / "gmemtest-base").write_text(name + "\n")
    return repo, name


def apply(series: Series, base_tree: Path, base_label: str, progress: Progress) -> Path:
    """A tree of the cache holding ``series`` on the kernel tree ``base_tree`` as one commit
    per patch (the base is HEAD~count). A series that does not apply: one line naming the
    first patch that fails and the file, and no tree left behind."""
    base, base_name = base_repo(base_tree, base_label, progress)
    base_head = tool.git(base, "rev-parse", "HEAD").stdout.strip()
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
            tool.git(tree, "config", "core.trustctime", "false")
            tool.git(tree, "checkout", "-q", "--detach", base_head)
            mbox = tree.parent / "series.mbox"
            mbox.write_bytes(b"".join(_mbox_entry(p) for p in series.patches))
            proc = tool.git(tree, "am", "-q", str(mbox), check=False)
            if proc.returncode:
                raise BuildFailed(BuildStage.APPLY, _am_failure(series, base_name, tree, proc))
        except BaseException:
            shutil.rmtree(tree.parent, ignore_errors=True)
            raise
        held = {**asdict(posted_info(series, base_name)), "base_commit": base_head}
        (tree / READY).write_text(json.dumps(held, indent=1) + "\n")
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
    tool.git(tree, "am", "--abort", check=False)
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


def of_patchset(patches: PatchSet) -> Series:
    """A patch set as a series to commit: its patch files (``git format-patch`` output, the
    mbox From line dropped), in the series file's order, named as the patch set."""
    messages = []
    for p in patches.patches:
        data = p.read_bytes()
        messages.append(data.split(b"\n", 1)[1] if data.startswith(b"From ") else data)
    return Series(subject=patches.name, version=1, msgid=f"{patches.digest}@gmemtest",
                  count=len(messages), mbox=str(patches.series_file), patches=tuple(messages))


def posted_info(series: Series, base: str) -> PostedInfo:
    """The series as a build's manifest and the reports name it."""
    return PostedInfo(series.subject, series.version, series.msgid, series.count, base)


@dataclass(frozen=True)
class Applied:
    """What a series tree holds, as :func:`apply` recorded it: the series and its base."""

    posted: PostedInfo
    base_commit: str


def info(tree: Path) -> Applied | None:
    """What the tree holds when it is a series tree (None for any other tree)."""
    path = tree / READY
    if not path.exists():
        return None
    again = f"; remove {tree.parent} and apply the series again"
    data = read_json(path, "a series tree's record", f"{path}: gone{again}", hint=again)
    try:
        check(data, {**posted_of.SHAPE, "base_commit": str}, str(path))
    except GmemtestError as e:
        raise GmemtestError(f"{e}{again}") from None
    base_commit = data.pop("base_commit")
    return Applied(PostedInfo(**data), base_commit)


def commits(tree: Path, count: int) -> list[tuple[str, str]]:
    """The series' commits in a series tree, oldest first: (sha, subject)."""
    out = tool.git(tree, "log", "--reverse", "--format=%H %s", f"-{count}", "HEAD").stdout
    return [(line[:40], line[41:]) for line in out.splitlines()]


def checkout(tree: Path, commit: str) -> None:
    tool.git(tree, "checkout", "-q", "--detach", commit)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
