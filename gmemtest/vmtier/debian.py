"""Fetching Debian packages (kernel source, uapi headers) without touching the system's apt.

apt-get runs with a private sources list, state directory and cache under gmemtest's cache dir.
The mirror is the one the system's apt sources already use; only the suites differ.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from gmemtest.cache import cache_dir, locked
from gmemtest.errors import BuildFailed, BuildStage, GmemtestError
from gmemtest.tool import last_line, run

from .progress import Progress

KERNEL_SUITES = ("unstable", "forky", "trixie-backports")
# The suites to search instead, space-separated (e.g. to leave trixie-backports out).
SUITES_ENV = "GMEMTEST_DEBIAN_SUITES"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def kernel_suites() -> tuple[str, ...]:
    """The suites searched for Debian's kernel source: $GMEMTEST_DEBIAN_SUITES, else
    KERNEL_SUITES."""
    chosen = tuple(os.environ.get(SUITES_ENV, "").split())
    return chosen or KERNEL_SUITES


def system_mirror(etc: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI configured in the system's apt sources (deb822 or one-line)."""
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
             *sorted((etc / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        uris = re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if re.search(r"/debian/?$", uri) and "security" not in uri:
                return str(uri).rstrip("/")
    raise GmemtestError("no Debian mirror in /etc/apt sources: add one, or pass --src DIR "
                        "with a kernel tree")


class PrivateApt:
    """apt-get/apt-cache over ``suites`` of the system mirror, with state in the cache dir."""

    def __init__(self, suites: tuple[str, ...] | None = None) -> None:
        suites = suites or kernel_suites()
        self.suites = suites
        if shutil.which("apt-get") is None:
            raise GmemtestError("apt-get not found: fetching Debian packages needs a Debian host "
                                "(or pass --src DIR with a kernel tree)")
        self.root = cache_dir("apt", "+".join(suites))
        for d in ("lists/partial", "archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        mirror = system_mirror()
        signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
        self.sources = self.root / "sources.list"
        self.sources.write_text("".join(f"deb {signed}{mirror} {s} main\n" for s in suites))
        self.options = ["-o", f"Dir::Etc::SourceList={self.sources}",
                        "-o", "Dir::Etc::SourceParts=/dev/null",
                        "-o", f"Dir::State::Lists={self.root / 'lists'}",
                        "-o", f"Dir::Cache={self.root}",
                        "-o", "APT::Sandbox::User=root", "-q"]
        self._updated = False

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        return run([tool, *self.options, *args], f"{tool} {args[0]}", cwd=cwd).stdout

    def update(self) -> None:
        if not self._updated:
            self._run("apt-get", "update")
            self._updated = True

    def newest(self, package: str, prefix: str = "") -> str:
        """The newest version of ``package`` in the suites (starting with ``prefix``)."""
        self.update()
        versions = [line.split("|")[1].strip() for line in
                    self._run("apt-cache", "madison", package).splitlines() if "|" in line]
        versions = [v for v in versions if v.startswith(prefix)]
        if not versions:
            what = package if package.endswith(prefix) else f"{package} {prefix}*"
            raise GmemtestError(f"{what} is not in {' '.join(self.suites)} of the system "
                                "mirror")
        versions.sort(key=_version_key)
        return versions[-1]

    def download(self, package: str, dest: Path, version: str | None = None) -> Path:
        """apt-get download ``package`` (newest version by default) into ``dest``."""
        version = version or self.newest(package)
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "download", f"{package}={version}", cwd=dest)
        found = sorted(dest.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
        if not found:
            raise GmemtestError(f"apt-get download {package}={version} produced no .deb")
        return found[0]


    def offered_bases(self) -> list[str]:
        """The bases X.Y of the linux-source-X.Y packages the suites offer, oldest first."""
        self.update()
        names = self._run("apt-cache", "pkgnames", "linux-source-").split()
        bases = []
        for n in names:
            m = re.fullmatch(r"linux-source-(\d+\.\d+)", n)
            if m and "|" in self._run("apt-cache", "madison", n):
                bases.append(m.group(1))
        return sorted(set(bases), key=_version_key)


def _version_key(version: str) -> list[object]:
    """Good enough Debian version ordering for kernel package versions (7.2.13-1 etc.)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


def extract(deb: Path, dest: Path) -> Path:
    """dpkg-deb -x the package into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", deb, dest], f"dpkg-deb -x {deb}")
    return dest


def linux_libc_dev(version_prefix: str = "7.2", suites: tuple[str, ...] = ("unstable",)) -> Path:
    """Debian's linux-libc-dev ``version_prefix``.x extracted into the cache; returns its
    usr/include (an installed-headers dir)."""
    root = cache_dir("debs")
    with locked(root / ".lock"):
        done = sorted(root.glob(f"linux-libc-dev_{version_prefix}*/usr/include/linux/kvm.h"))
        if done:
            return done[-1].parent.parent
        apt = PrivateApt(suites)
        version = apt.newest("linux-libc-dev", version_prefix)
        deb = apt.download("linux-libc-dev", root / "downloads", version)
        out = extract(deb, root / f"linux-libc-dev_{version}")
        deb.unlink()
        return out / "usr/include"


@dataclass(frozen=True)
class Source:
    """Debian's linux-source of a base, extracted in the cache: the tree and its version."""

    path: Path
    package: str
    version: str

    @property
    def name(self) -> str:
        return f"{self.package} {self.version}"


def fetch_source(base: str, progress: Progress) -> Source:
    """The newest linux-source-<base> of the Debian suites, extracted once into the cache."""
    package = f"linux-source-{base}"
    root = cache_dir("src")
    with locked(root / ".lock"):
        apt: PrivateApt | None = None
        try:
            apt = PrivateApt()
            progress.phase("fetch", f"newest {package} in {' '.join(apt.suites)}")
            version = apt.newest(package, base)
        except GmemtestError as e:
            found = _offered_or_none(apt) if apt is not None else None
            if found is not None:
                e = GmemtestError(f"{e} (they offer linux-source {', '.join(found) or 'none'})")
            raise BuildFailed(BuildStage.FETCH, str(e)) from None
        tree = root / f"{package}_{version}" / package
        if not (tree / "Makefile").is_file():
            progress.phase("fetch", f"apt-get download {package}={version}")
            try:
                deb = apt.download(package, root / "downloads", version)
            except GmemtestError as e:
                raise BuildFailed(BuildStage.FETCH, str(e)) from None
            progress.phase("extract", deb.name)
            _extract_source(deb, tree.parent)
            deb.unlink()
        return Source(tree, package, version)


def is_patched_copy(name: str) -> bool:
    """Whether a directory of the source cache is a patched copy (kernel.patched names them
    "<source dir>+<16 hex digits>"); Debian versions may hold a '+' too (7.3.4-1~bpo13+1)."""
    return re.search(r"\+[0-9a-f]{16}$", name) is not None


def fetched_bases() -> list[str]:
    """The bases whose linux-source is extracted in the cache (not a patched copy), oldest
    first."""
    found = {m.group(1) for p in cache_dir("src").glob("linux-source-*_*/linux-source-*/Makefile")
             if (m := re.fullmatch(r"linux-source-(\d+\.\d+)_[^/]*", p.parent.parent.name))
             and not is_patched_copy(p.parent.parent.name)}
    return sorted(found, key=_version_key)


def _offered_or_none(apt: PrivateApt) -> list[str] | None:
    try:
        return apt.offered_bases()
    except GmemtestError:
        return None


def _extract_source(deb: Path, dest: Path) -> None:
    """Unpack the tarball inside linux-source-*.deb into ``dest`` (atomically)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pipeline = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO --wildcards './usr/src/*.tar.xz' "
                f"| tar -xJ -C '{tmp}'")
    proc = run(["bash", "-o", "pipefail", "-c", pipeline], f"unpacking {deb.name}", check=False)
    if proc.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildFailed(BuildStage.FETCH, f"unpacking {deb.name} failed: {last_line(proc)}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
