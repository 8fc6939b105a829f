"""A self-contained guest root, for CI runners whose own root cannot be shared with the guest.

A minimal Debian (debootstrap, the system's mirror) with python3, the compiler and binutils the
suite uses, and a venv at /opt/gmemtest/venv holding the project's dependencies and the project
installed editable from /opt/gmemtest/src. The image is a directory, shared read-only over
virtio-9p like the host root; before each boot this checkout's files are copied into
/opt/gmemtest/src, so the image is rebuilt only when the dependencies change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

from gmemtest import tool
from gmemtest.cache import cache_dir, locked
from gmemtest.errors import GmemtestError

from . import debian
from .checkout import CHECKOUT
from .progress import Progress

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-dev", "gcc", "libc6-dev", "binutils", "make",
            "util-linux", "mount", "procps", "ca-certificates")
SRC = Path("/opt/gmemtest/src")
VENV = Path("/opt/gmemtest/venv")


def _key() -> str:
    pyproject = (CHECKOUT / "pyproject.toml").read_bytes()
    return hashlib.sha256(pyproject + " ".join(PACKAGES).encode() + SUITE.encode()).hexdigest()[:12]


def path() -> Path:
    return cache_dir("vmimage") / f"debian-{SUITE}-{_key()}"


def build(progress: Progress | None = None) -> Path:
    """Build the image (cached by the dependencies); returns its root directory."""
    progress = progress or Progress()
    root = path()
    with locked(root.parent / ".lock"):
        if (root / "gmemtest-image.json").exists():
            return root
        if shutil.which("debootstrap") is None:
            raise GmemtestError("debootstrap not found: apt-get install debootstrap")
        t0 = time.monotonic()
        tmp = root.with_name(root.name + ".partial")
        if tmp.exists():
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
        progress.phase("image", f"debootstrap {SUITE} into {tmp}")
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
              str(tmp), debian.system_mirror()], "debootstrap")
        shutil.copy("/etc/resolv.conf", tmp / "etc/resolv.conf")
        sync_checkout(tmp)
        progress.phase("image", "venv with the project's dependencies")
        _run(["chroot", str(tmp), "python3", "-m", "venv", str(VENV)], "venv")
        _run(["chroot", str(tmp), str(VENV / "bin/pip"), "install", "-q", "-e",
              f"{SRC}[test]"], "pip install", env=_pip_env(tmp))
        seconds = time.monotonic() - t0
        size = int(subprocess.run(["du", "-sb", str(tmp)], capture_output=True, text=True)
                   .stdout.split()[0])
        (tmp / "gmemtest-image.json").write_text(json.dumps(
            {"suite": SUITE, "packages": PACKAGES, "build_seconds": round(seconds),
             "bytes": size}, indent=2) + "\n")
        tmp.rename(root)
        progress.done("image", f"{root} ({size / 2**20:.0f} MiB, {seconds:.0f} s)")
    return root


def sync_checkout(root: Path) -> None:
    """Copy this checkout's tracked (and new, unignored) files to /opt/gmemtest/src."""
    files = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    dest = root / SRC.relative_to("/")
    for rel in files:
        src = CHECKOUT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _pip_env(root: Path) -> dict[str, str]:
    """pip inside the image trusts what the host trusts (a proxy's CA, say): the host's CA
    bundle replaces the image's, and the host's index settings are passed on."""
    bundle = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile \
        or "/etc/ssl/certs/ca-certificates.crt"
    if Path(bundle).is_file():
        shutil.copy(bundle, root / "etc/ssl/certs/ca-certificates.crt")
    keep = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT")
    return {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in keep}


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    tool.run(cmd, f"image build: {what}", env=env)
