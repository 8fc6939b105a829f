"""Where gmemtest keeps what it builds (agent images, kernel builds, downloads)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$GMEMTEST_CACHE, else $XDG_CACHE_HOME/gmemtest or ~/.cache/gmemtest; a temp dir when
    that is not writable (a guest booted on a read-only root)."""
    base = os.environ.get("GMEMTEST_CACHE")
    candidates = [Path(base)] if base else [
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gmemtest"]
    candidates.append(Path(tempfile.gettempdir()) / "gmemtest-cache")
    for root in candidates:
        path = root.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise OSError(f"no writable cache directory among {', '.join(map(str, candidates))}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) for the duration: one
    downloader or builder at a time across processes and xdist workers."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
