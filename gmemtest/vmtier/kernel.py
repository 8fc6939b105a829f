"""Getting and building the kernel under test.

Source: the user's tree (``--src``) or Debian's linux-source-7.2 (newest 7.2.x in unstable, forky
or trixie-backports), extracted once into the cache. The project's kpatches/ series is applied to
the Debian source by default (a hard-linked copy per series, so the pristine tree stays pristine).
Builds are out of tree, in ``<cache>/build/<key>`` (key: source path, hence its patches, and
configuration), and reused. For a patched copy of the Debian source, which the cache owns, that
entry is a link to a build directory inside the tree: Kbuild then names every source file
relative to it ("../"), so ccache shares objects across patch sets and with bisect trees built
the same way (``build_dir``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gmemtest.cache import cache_dir, locked, write_atomically
from gmemtest.errors import GmemtestError

from . import debian, kconfig
from .checkout import KPATCHES
from .progress import Progress

log = logging.getLogger(__name__)

# In a tree that holds a posted series (gmemtest.vmtier.series): the series and its base.
SERIES_INFO = ".gmemtest-series.json"
DEBIAN_PACKAGE = "linux-source-7.2"
DEBIAN_VERSION_PREFIX = "7.2"


@dataclass
class Source:
    """A kernel tree and how it was identified."""

    path: Path
    kind: str  # "debian" or "tree"
    version: str
    patches: list[str] = field(default_factory=list)
    commit: str | None = None
    series: dict[str, Any] | None = None  # a posted series applied as commits: what it is


@dataclass
class Build:
    """What `gmemtest kernel build` produces."""

    dir: Path
    bzimage: Path
    headers: Path
    config: Path
    manifest: Path
    source: Source
    seconds: float
    objects: int = 0       # objects (C and assembly) this build compiled
    objects_cold: int = 0  # objects a build of this configuration from nothing compiles


def series(patch_dir: Path = KPATCHES) -> list[Path]:
    """The patches kpatches/series lists, in order (none when the series file is absent)."""
    listing = patch_dir / "series"
    if not listing.is_file():
        return []
    names = [ln.split("#")[0].strip() for ln in listing.read_text().splitlines()]
    patches = [patch_dir / n for n in names if n]
    for p in patches:
        if not p.is_file():
            raise GmemtestError(f"{listing} names {p.name}, which does not exist")
    return patches


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def debian_source(progress: Progress) -> Source:
    """Newest linux-source-7.2 from the Debian suites, extracted once into the cache."""
    root = cache_dir("src")
    with locked(root / ".lock"):
        progress.phase("fetch", f"newest {DEBIAN_PACKAGE} in {' '.join(debian.KERNEL_SUITES)}")
        apt = debian.PrivateApt()
        version = apt.newest(DEBIAN_PACKAGE, DEBIAN_VERSION_PREFIX)
        tree = root / f"{DEBIAN_PACKAGE}_{version}" / DEBIAN_PACKAGE
        if not (tree / "Makefile").is_file():
            progress.phase("fetch", f"apt-get download {DEBIAN_PACKAGE}={version}")
            deb = apt.download(DEBIAN_PACKAGE, root / "downloads", version)
            progress.phase("extract", f"{deb.name}")
            _extract_source(deb, tree.parent)
            deb.unlink()
        return Source(tree, "debian", f"{DEBIAN_PACKAGE} {version}")


def _extract_source(deb: Path, dest: Path) -> None:
    """Unpack the tarball inside linux-source-*.deb into ``dest`` (atomically)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pipeline = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO --wildcards './usr/src/*.tar.xz' "
                f"| tar -xJ -C '{tmp}'")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True,
                          text=True)
    if proc.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GmemtestError(f"unpacking {deb.name} failed: {proc.stderr.strip()[-300:]}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def patched(source: Source, patches: list[Path], progress: Progress) -> Source:
    """A hard-linked copy of ``source`` with ``patches`` applied, cached per series."""
    if not patches:
        return source
    key = _digest(str(source.path), *(p.read_bytes() for p in patches))
    dest = source.path.parent.parent / f"{source.path.parent.name}+{key}" / source.path.name
    with locked(cache_dir("src") / ".lock"):
        if not (dest / ".gmemtest-patched").exists():
            progress.phase("patch", f"{len(patches)} patches from {patches[0].parent}")
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(source.path), str(tmp)], check=True)
            for p in patches:
                proc = subprocess.run(["patch", "-p1", "-s", "--no-backup-if-mismatch", "-i",
                                       str(p)], cwd=tmp, capture_output=True, text=True)
                if proc.returncode:
                    shutil.rmtree(tmp.parent if not dest.exists() else tmp, ignore_errors=True)
                    first = (proc.stdout + proc.stderr).strip().splitlines()[:1]
                    raise GmemtestError(f"{p.parent.name}/{p.name} does not apply to "
                                        f"{source.version}: {' '.join(first)}")
            (tmp / ".gmemtest-patched").write_text("\n".join(p.name for p in patches) + "\n")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    return Source(dest, source.kind, source.version, [p.name for p in patches])


def user_source(path: Path) -> Source:
    """The user's tree as it is (no patches applied to it)."""
    if not (path / "Makefile").is_file() or not (path / "virt/kvm").is_dir():
        raise GmemtestError(f"--src {path}: not a Linux source tree (no Makefile or virt/kvm/)")
    commit = None
    if (path / ".git").exists():
        proc = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty",
                               "--abbrev=12"], capture_output=True, text=True)
        commit = proc.stdout.strip() or None
    version = subprocess.run(["make", "-s", "-C", str(path), "kernelversion"],
                             capture_output=True, text=True).stdout.strip()
    return Source(path.resolve(), "tree", version or "unknown", commit=commit)


def _make_env(src: Path) -> dict[str, str]:
    """make's environment: ccache shares objects across trees (pristine, patched, bisect
    checkouts) because paths under the tree are hashed relative to it."""
    env = dict(os.environ)
    if shutil.which("ccache"):
        env.setdefault("CCACHE_DIR", str(cache_dir("ccache")))
        env.setdefault("CCACHE_BASEDIR", str(src))
        env.setdefault("CCACHE_NOHASHDIR", "1")
    return env


def build(src: Path | None = None, *, patches: bool | None = None,
          fragments: list[str] | None = None, jobs: int | None = None,
          progress: Progress | None = None, patch_dir: Path = KPATCHES,
          fresh: bool = False, build_dir: Path | None = None,
          describe: dict[str, Any] | None = None) -> Build:
    """Fetch (or take) the source, patch (the series in ``patch_dir``), configure and build
    bzImage and the uapi headers. ``build_dir``: build there (a subdirectory of the tree shares
    ccache objects with other trees). ``fresh``: in a new build directory, without ccache (a
    cold build, for measuring one). ``describe``: what the tree holds beyond its commit (a
    posted series), for the manifest and the reports."""
    progress = progress or Progress()
    t0 = time.monotonic()
    for tool in ("make", "gcc", "flex", "bison", "bc", "lz4"):
        if shutil.which(tool) is None:
            raise GmemtestError(f"'{tool}' not found: run scripts/bootstrap --vm (or apt-get "
                                "install build-essential flex bison bc lz4 libelf-dev libssl-dev)")
    frags = kconfig.fragment_paths(fragments or list(kconfig.DEFAULT_FRAGMENTS))
    if src is None:
        source = debian_source(progress)
        if patches is not False:
            source = patched(source, series(patch_dir), progress)
    else:
        source = user_source(src)
        info = src / SERIES_INFO
        source.series = describe or (json.loads(info.read_text()) if info.exists() else None)
        if source.series is not None and build_dir is None:
            build_dir = src / ".gmemtest-build"  # in the tree: ccache serves other trees
        if patches:
            source = patched(source, series(patch_dir), progress)
    config_hash = _digest(*(f.read_bytes() for f in frags))
    # The source's path says what it is: a patched copy's name carries its patches' digest.
    bdir = cache_dir("build") / _digest(str(source.path), config_hash)
    if build_dir is None and source.kind == "debian" and source.patches:
        # A patched copy: the cache's own, and never copied again (the pristine tree is).
        build_dir = source.path / f".gmemtest-build-{config_hash}"
    env = _make_env(source.path)
    if fresh:
        bdir = Path(tempfile.mkdtemp(prefix="cold-", dir=cache_dir("build")))
        env["CCACHE_DISABLE"] = "1"
    else:
        _place(bdir, build_dir)
    with locked(bdir / ".lock"):
        progress.phase("config", f"tinyconfig + {' '.join(f.stem for f in frags)}")
        stamp, stamp_file = config_stamp(source.path, frags), bdir / ".gmemtest-config-stamp"
        if fresh or not (bdir / ".config").exists() or not stamp_file.exists() \
                or stamp_file.read_text() != stamp:
            stamp_file.unlink(missing_ok=True)
            kconfig.generate(source.path, bdir, frags, env)
            stamp_file.write_text(stamp)
        cc = ["CC=ccache gcc"] if shutil.which("ccache") else []
        jobs = jobs or os.cpu_count() or 1
        objects = _run_make(source.path, bdir, ["bzImage", "headers"], [*cc, f"-j{jobs}"], env,
                            progress)
    cold_file = bdir / COLD_OBJECTS
    out = Build(bdir, bdir / "arch/x86/boot/bzImage", bdir / "usr/include", bdir / ".config",
                bdir / "gmemtest-manifest.json", source, time.monotonic() - t0, objects,
                int(cold_file.read_text()) if cold_file.exists() else 0)
    manifest = {"source": asdict(source) | {"path": str(source.path)},
                "config_hash": config_hash, "fragments": [f.stem for f in frags],
                "bzImage": str(out.bzimage), "headers": str(out.headers),
                "config": str(out.config), "build_seconds": round(out.seconds, 1),
                "objects_compiled": out.objects, "objects_cold": out.objects_cold,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    progress.done("build", f"{out.bzimage} in {out.seconds:.0f} s")
    return out


def config_stamp(src: Path, fragments: list[Path]) -> str:
    """What the generated .config depends on: the fragments, and every Kconfig file and the
    kconfig tool of the tree (size and mtime: a checkout of another commit touches what
    differs). When it is unchanged the .config is too, and generating it again (5 s) is
    skipped: a walk over a series builds a prefix per patch."""
    parts: list[str | bytes] = [kconfig.GENERATOR, *(f.read_bytes() for f in fragments)]
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("Kconfig") or (root.endswith("scripts/kconfig")
                                              and name.endswith((".c", ".h", ".y", ".l"))):
                st = os.stat(os.path.join(root, name))
                parts.append(f"{os.path.join(root, name)} {st.st_size} {st.st_mtime_ns}")
    return _digest(*parts)


def _place(entry: Path, build_dir: Path | None) -> None:
    """Make the cache's ``entry`` the build directory, or a link to ``build_dir``."""
    with locked(cache_dir("build") / ".entries.lock"):
        if build_dir is None:
            if entry.is_symlink():
                entry.unlink()
            entry.mkdir(exist_ok=True)
            return
        build_dir = build_dir.resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        if entry.is_symlink() and entry.resolve() == build_dir:
            return
        if entry.is_symlink():
            entry.unlink()
        elif entry.exists():
            shutil.rmtree(entry)
        entry.symlink_to(build_dir, target_is_directory=True)


SELFTESTS = ("guest_memfd_test", "pre_fault_memory_test", "set_memory_region_test",
             "x86/private_mem_conversions_test", "x86/private_mem_kvm_exits_test")


def selftests(b: Build, progress: Progress | None = None) -> Path:
    """Build the upstream KVM selftests gmemtest compares with, from the same tree, against
    the build's uapi headers; returns their output directory."""
    progress = progress or Progress()
    out = b.dir / "kselftest/kvm"
    out.mkdir(parents=True, exist_ok=True)
    kvm_dir = b.source.path / "tools/testing/selftests/kvm"
    targets = [str(out / name) for name in SELFTESTS]
    args = [f"OUTPUT={out}", f"KHDR_INCLUDES=-isystem {b.headers}",
            f"-j{os.cpu_count() or 1}", *targets]
    progress.phase("selftests", " ".join(SELFTESTS))
    proc = subprocess.run(["make", "-s", "-C", str(kvm_dir), *args], capture_output=True,
                          text=True, env=_make_env(b.source.path))
    (out / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise GmemtestError(f"KVM selftests did not build: "
                            f"{first_error(proc.stderr, proc.returncode)} "
                            f"(log: {out / 'build.log'})")
    progress.done("selftests", str(out))
    return out


COMPILE_LINE = re.compile(r"^\s+(CC|AS|LD|AR|HOSTCC|HOSTLD|OBJCOPY|GEN|HDRINST)\b")
# An object of the kernel compiled from C or assembly: kbuild's quiet "CC"/"AS" lines for a
# target in the build tree. Host tools are not counted (objtool's objects, the only "CC" lines
# of the build with an absolute path, nor HOSTCC), nor headers.
OBJECT_LINE = re.compile(r"^\s+(CC|AS)\s+[^/\s]")
# Objects the last build of a build directory from nothing compiled (configuration's size).
COLD_OBJECTS = ".gmemtest-cold-objects"
# What names a failed build, best first: a compiler or linker diagnostic, then make's own.
BUILD_ERRORS = (re.compile(r": (fatal )?error: "), re.compile(r"undefined reference to|"
                                                              r"ld: .*(error|No such file)"),
                re.compile(r"\*\*\* .*(Error \d+|[Nn]o rule|[Ss]top)"))


def first_error(output: str, rc: int) -> str:
    """The line of a failed make's output that says what went wrong."""
    lines = [ln.strip() for ln in output.splitlines()]
    for pattern in BUILD_ERRORS:
        for line in lines:
            if pattern.search(line):
                return line
    return f"make exited {rc}"


def _run_make(src: Path, bdir: Path, targets: list[str], args: list[str], env: dict[str, str],
              progress: Progress) -> int:
    """Run make, counting compiled files for the progress line; keep the log in the build dir.
    Returns how many objects it compiled."""
    build_log = bdir / "build.log"
    progress.phase("build", " ".join(targets))
    # A cold build compiles about as many files as the last cold build did: the bar's total.
    estimate = cache_dir("build") / ".files-per-cold-build"
    cold = not (bdir / "vmlinux").exists()
    total = int(estimate.read_text()) if cold and estimate.exists() else None
    command = ["make", "-C", str(src), f"O={bdir}", *args, *targets]
    log.info("%s", " ".join(command))
    with open(build_log, "w") as f:
        proc = subprocess.Popen(command,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
        assert proc.stdout is not None
        files = objects = 0
        try:
            for line in proc.stdout:
                f.write(line)
                objects += bool(OBJECT_LINE.match(line))
                if COMPILE_LINE.match(line):
                    files += 1
                    progress.tick(files, "files", line.split()[-1], total)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
    log.info("make exited %d after compiling %d files, %d objects (log: %s)", rc, files,
             objects, build_log)
    if cold and rc == 0:
        write_atomically(estimate, f"{files}\n".encode())
        write_atomically(bdir / COLD_OBJECTS, f"{objects}\n".encode())
    if rc:
        first = first_error(build_log.read_text(errors="replace"), rc)
        raise GmemtestError(f"kernel build failed: {first} (full log: {build_log})")
    return objects


def summary(b: Build) -> str:
    """What the build produced, one item a line."""
    patches = f" + {len(b.source.patches)} kpatches" if b.source.patches else ""
    series = ""
    if b.source.series:
        s = b.source.series["series"]
        series = (f"series:   v{s['version']} \"{s['subject']}\", {s['count']} patches, "
                  f"<{s['msgid']}>, on {b.source.series['base']}\n")
    return (f"kernel:   {b.source.version}{patches}\n{series}bzImage:  {b.bzimage}\n"
            f"headers:  {b.headers}\nconfig:   {b.config}\nmanifest: {b.manifest}\n"
            f"build:    {b.seconds:.0f} s, {b.objects} objects compiled"
            + (f" (from nothing: {b.objects_cold})" if b.objects_cold else ""))
