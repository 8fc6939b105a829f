"""Running the host's tools (git, make, gcc, apt, gcov): one way to run one, and one way to say
that it failed, as one line naming what was being done and the tool's last line of output."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from gmemtest.errors import GmemtestError

# git as gmemtest commits: a fixed identity, paths as they are, no detached-HEAD advice.
GIT = ("git", "-c", "user.name=gmemtest", "-c", "user.email=gmemtest@localhost",
       "-c", "core.quotepath=off", "-c", "advice.detachedHead=false")


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """What a failed tool said last: its last line of stderr, else of stdout."""
    lines = proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines()
    return lines[-1].strip() if lines else f"exit {proc.returncode}, no output"


def run(cmd: Sequence[str | Path], what: str, *, cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """``cmd`` run to its end, output captured. With ``check``, a non-zero exit is one line:
    ``what`` (the step, e.g. "make headers in TREE"), then the tool's last line."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                          env=dict(env) if env is not None else None,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode:
        raise GmemtestError(f"{what} failed: {last_line(proc)}")
    return proc


def git(repo: Path, *args: str, check: bool = True,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """git in ``repo`` as gmemtest runs it (:data:`GIT`)."""
    return run([*GIT, "-C", str(repo), *args], f"git {' '.join(args[:2])} in {repo}",
               check=check, env=env)
