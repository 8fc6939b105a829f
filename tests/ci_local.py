"""Running .gitlab-ci.yml on this machine with gitlab-ci-local (its shell executor), in a git
copy of this checkout as it is (uncommitted files too), on this machine's gmemtest cache and
venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from gmemtest.cache import cache_dir
from gmemtest.vmtier.checkout import CHECKOUT


def checkout_copy(dest: Path) -> Path:
    """This checkout's files in a new git repository at ``dest``."""
    dest.mkdir()
    files = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (CHECKOUT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / rel, dest / rel)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
        subprocess.run(["git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost",
                        *args], cwd=dest, check=True)
    return dest


def run(repo: Path, variables: dict[str, str], jobs: tuple[str, ...] = (),
        timeout: float = 2300) -> subprocess.CompletedProcess[str]:
    """gitlab-ci-local in ``repo`` with ``variables`` (and this machine's cache and venv, no
    bootstrap), the whole pipeline or ``jobs`` and what they need."""
    every = {"GMEMTEST_CACHE": str(cache_dir()), "BOOTSTRAP": "true", "VENV": sys.prefix,
             **variables}
    args = [a for k, v in every.items() for a in ("--variable", f"{k}={v}")]
    proc = subprocess.run(["gitlab-ci-local", *args, *jobs, *(["--needs"] if jobs else [])],
                          cwd=repo, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-4000:], proc.stderr[-2000:])
    return proc
