"""Building the kernel under test: :func:`resolve` turns a :class:`KernelSpec` into one typed
:class:`Build`, and is the only place that does.

Sources: Debian's linux-source of a base (fetched and extracted once into the cache), a kernel
tree, or a posted series applied onto either (gmemtest.vmtier.series). A patch set is applied to
a hard-linked copy, cached per patch set, so the pristine tree stays pristine. Builds are out of
tree, in ``<cache>/build/<key>`` (key: the source's path, hence its patches, and the
configuration), and reused. For a patched copy of the Debian source, which the cache owns, that
entry is a link to a build directory inside the tree: Kbuild then names every source file
relative to it ("../"), so ccache shares objects across patch sets and with bisect trees built
the same way (a tree's ``build_dir``). Every build writes its manifest (gmemtest.vmtier.manifest)
and every failure says, typed, where it stopped (:class:`gmemtest.errors.BuildFailed`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gmemtest.cache import cache_dir, locked, write_atomically
from gmemtest.errors import BuildFailed, BuildStage, GmemtestError
from gmemtest.results.posted import PostedInfo
from gmemtest.testing import kselftest
from gmemtest.testing.kselftest import LISTING, Listing

from . import debian, kconfig, manifest, selftests, series
from .kernelspec import Debian, KernelSpec, Posted, Prebuilt, Tree
from .make import first_error, make_env
from .manifest import BZIMAGE, NAME, Manifest
from .patchset import PatchSet
from .progress import Progress

log = logging.getLogger(__name__)
# The symbol a kernel with kvm.gmem_in_place_conversion has in its System.map.
SWITCH_SYMBOL = "__param_gmem_in_place_conversion"
TOOLS = ("make", "gcc", "flex", "bison", "bc", "lz4")


@dataclass(frozen=True)
class Build:
    """A kernel ready to boot: the spec it was made from, its bzImage and its build's manifest
    (None only for a bzImage built elsewhere), with this build's time and compiled objects."""

    spec: KernelSpec
    bzimage: Path
    manifest: Manifest | None
    seconds: float = 0.0
    objects: int = 0

    @property
    def dir(self) -> Path | None:
        """The build directory, as its manifest records it (a mutant's bzImage is a copy
        elsewhere; its build is still that directory)."""
        if self.manifest is None:
            return None
        return Path(self.manifest.build_dir)

    @property
    def headers(self) -> Path | None:
        """Its installed uapi headers, where the build made them."""
        if self.manifest is None or not (Path(self.manifest.headers) / "linux/kvm.h").exists():
            return None
        return Path(self.manifest.headers)

    @property
    def kselftests(self) -> Listing | None:
        """The tree's guest_memfd selftests built with it (gmemtest.vmtier.selftests)."""
        if self.dir is None or not (self.dir / selftests.OUT / LISTING).is_file():
            return None
        return kselftest.read(self.dir / selftests.OUT)

    @property
    def config(self) -> Path | None:
        """Its .config: the manifest's, or that of the build directory the bzImage lies in."""
        if self.manifest is not None:
            return Path(self.manifest.config)
        directory = manifest.build_dir(self.bzimage)
        return directory / ".config" if directory is not None else None

    @property
    def label(self) -> str:
        return self.manifest.label if self.manifest is not None else self.spec.label()

    @property
    def source_path(self) -> Path | None:
        return Path(self.manifest.source_path) if self.manifest is not None else None


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Tree:
    """A source tree about to be built, and what the manifest says of it."""

    path: Path
    kind: str  # "debian" or "tree"
    version: str
    commit: str | None = None
    posted: PostedInfo | None = None
    build_dir: Path | None = None
    patch_set: PatchSet | None = None


def resolve(spec: KernelSpec, progress: Progress | None = None, *, jobs: int | None = None,
            fresh: bool = False) -> Build:
    """The kernel ``spec`` names, built (incrementally) or, for a built kernel, as it is.
    ``fresh``: in a new build directory, without ccache (a cold build, for measuring one)."""
    progress = progress or Progress()
    if isinstance(spec.source, Prebuilt):
        return Build(spec, spec.source.bzimage, spec.source.manifest)
    for tool in TOOLS:
        if shutil.which(tool) is None:
            raise BuildFailed(BuildStage.HOST, f"'{tool}' not found: run scripts/bootstrap --vm "
                              "(or apt-get install build-essential flex bison bc lz4 libelf-dev "
                              "libssl-dev)")
    t0 = time.monotonic()
    return _build(spec, _prepare(spec, progress), progress, jobs, fresh, t0)


def prepare(spec: KernelSpec, progress: Progress | None = None) -> Path:
    """The source tree ``spec`` builds from, fetched, patched or with its series applied, but
    not built."""
    if isinstance(spec.source, Prebuilt):
        raise GmemtestError(f"{spec.label()}: a built kernel has no tree to prepare")
    return _prepare(spec, progress or Progress()).path


def _prepare(spec: KernelSpec, progress: Progress) -> _Tree:
    tree = _source(spec, progress)
    if spec.patches is not None:
        tree = patched(tree, spec.patches, progress)
    return tree


def _source(spec: KernelSpec, progress: Progress) -> _Tree:
    src = spec.source
    if isinstance(src, Debian):
        if src.fallback:
            progress.phase("base", src.fallback)
        ds = debian.fetch_source(src.base, progress)
        return _Tree(ds.path, "debian", ds.name)
    if isinstance(src, Tree):
        return _user_tree(src.path, src.build_dir)
    assert isinstance(src, Posted)
    return _user_tree(series_tree(spec, progress).path, None)


@dataclass(frozen=True)
class SeriesTree:
    """A kernel's series as a developer's git tree: its base (named ``base``), then one commit
    per patch (the series is HEAD~count..HEAD)."""

    path: Path
    count: int
    base: str

    def commits(self) -> list[tuple[str, str]]:
        """The series' commits, oldest first: (sha, subject)."""
        return series.commits(self.path, self.count)


def series_tree(spec: KernelSpec, progress: Progress | None = None) -> SeriesTree:
    """The series of ``spec`` as a git tree of the cache, made once: a posted series on its
    base, or a patch set (kpatches/ or a directory) on its source. The only place gmemtest
    makes a kernel tree with a commit per patch."""
    progress = progress or Progress()
    src = spec.source
    if isinstance(src, Posted):
        onto, s = src.onto, src.series
    elif spec.patches is not None and isinstance(src, Debian | Tree):
        if spec.patches.in_base:
            raise GmemtestError(f"{spec.label()}: a patch set with patches marked in the base "
                                "has no series tree (its base would have to lose them first)")
        onto, s = src, series.of_patchset(spec.patches)
    else:
        raise GmemtestError(f"{spec.label()}: no series to make a tree of (kpatches, a patch "
                            "set or a posted series)")
    if isinstance(onto, Debian):
        ds = debian.fetch_source(onto.base, progress)
        base, name = ds.path, ds.name
    else:
        base, name = onto.path, str(onto.path)
    return SeriesTree(series.apply(s, base, name, progress), s.count, name)


def _user_tree(path: Path, build_dir: Path | None) -> _Tree:
    """A tree as it is; a series tree (what `series apply` made) names its series."""
    if not (path / "Makefile").is_file():
        raise BuildFailed(BuildStage.INPUT, f"{path}: no longer a kernel tree (no Makefile)")
    commit = None
    if (path / ".git").exists():
        proc = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty",
                               "--abbrev=12"], capture_output=True, text=True)
        commit = proc.stdout.strip() or None
    version = subprocess.run(["make", "-s", "-C", str(path), "kernelversion"],
                             capture_output=True, text=True).stdout.strip()
    applied = series.info(path)
    if applied is not None and build_dir is None:
        build_dir = path / ".gmemtest-build"  # in the tree: ccache serves other trees
    return _Tree(path.resolve(), "tree", version or "unknown", commit,
                 applied.posted if applied else None, build_dir)


def patched(tree: _Tree, patches: PatchSet, progress: Progress) -> _Tree:
    """A hard-linked copy of ``tree`` with ``patches`` applied, cached per patch set; a patch
    that does not apply is one line, and no copy is left."""
    key = _digest(str(tree.path), patches.digest)
    if tree.kind == "debian":
        dest = tree.path.parent.parent / f"{tree.path.parent.name}+{key}" / tree.path.name
    else:
        dest = cache_dir("src") / f"tree-{key}" / "linux"
    with locked(cache_dir("src") / ".lock"):
        if not (dest / ".gmemtest-patched").exists():
            progress.phase("patch", f"{len(patches.patches)} patches: {patches.name}")
            tmp = dest.with_name(dest.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(tree.path), str(tmp)], check=True)
            # The base holds the patches marked in it when they come off it, last first, and
            # go back on, in order: the tree ends as it was.
            steps = [(p, "-R") for p in reversed(patches.in_base)] + \
                [(p, "-N") for p in patches.in_base]
            for p, way in steps:
                proc = subprocess.run(["patch", "-p1", way, "-s", "-f",
                                       "--no-backup-if-mismatch", "-i", str(p)], cwd=tmp,
                                      capture_output=True, text=True)
                if proc.returncode:
                    shutil.rmtree(tmp.parent if not dest.exists() else tmp, ignore_errors=True)
                    raise BuildFailed(BuildStage.APPLY, f"{patches.name}: {p.name} is marked "
                                      f"in the base, but {tree.version} does not contain it")
            for p in patches.patches:
                proc = subprocess.run(["patch", "-p1", "-s", "--no-backup-if-mismatch", "-i",
                                       str(p)], cwd=tmp, capture_output=True, text=True)
                if proc.returncode:
                    shutil.rmtree(tmp.parent if not dest.exists() else tmp, ignore_errors=True)
                    first = (proc.stdout + proc.stderr).strip().splitlines()[:1]
                    raise BuildFailed(BuildStage.APPLY, f"{patches.name}: {p.name} does not "
                                      f"apply to {tree.version}: {' '.join(first)}")
            (tmp / ".gmemtest-patched").write_text("\n".join(patches.names) + "\n")
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    return _Tree(dest, tree.kind, tree.version, tree.commit, tree.posted, tree.build_dir,
                 patches)


def gcov_stem(source: str) -> str:
    """How Kbuild names the object of ``source`` (a .c file of the tree) in the Makefile that
    builds it, for its per-object GCOV_PROFILE_<stem>.o: KVM's objects are x86's kvm-y, the
    generic ones reached from arch/x86/kvm as ../../../virt/kvm/<name>."""
    path = Path(source).with_suffix("")
    if path.parts[:2] == ("virt", "kvm"):
        return f"../../../{path}"
    if path.parts[:3] == ("arch", "x86", "kvm"):
        return str(Path(*path.parts[3:]))
    return path.name


def _build(spec: KernelSpec, tree: _Tree, progress: Progress, jobs: int | None, fresh: bool,
           t0: float) -> Build:
    frags = kconfig.fragment_paths(list(spec.fragments))
    config_hash = _digest(*(f.read_bytes() for f in frags), *spec.gcov)
    # The source's path says what it is: a patched copy's name carries its patches' digest.
    bdir = cache_dir("build") / _digest(str(tree.path), config_hash)
    build_dir = tree.build_dir
    if build_dir is not None and spec.gcov:  # the coverage build beside the lean one
        build_dir = build_dir.with_name(build_dir.name + "-coverage")
    if build_dir is None and tree.kind == "debian" and tree.patch_set is not None:
        # A patched copy: the cache's own, and never copied again (the pristine tree is).
        build_dir = tree.path / f".gmemtest-build-{config_hash}"
    env = make_env(tree.path)
    if fresh:
        bdir = Path(tempfile.mkdtemp(prefix="cold-", dir=cache_dir("build")))
        env["CCACHE_DISABLE"] = "1"
    else:
        _place(bdir, build_dir)
    with locked(bdir / ".lock"):
        progress.phase("config", f"tinyconfig + {' '.join(f.stem for f in frags)}")
        stamp, stamp_file = config_stamp(tree.path, frags), bdir / ".gmemtest-config-stamp"
        if fresh or not (bdir / ".config").exists() or not stamp_file.exists() \
                or stamp_file.read_text() != stamp:
            stamp_file.unlink(missing_ok=True)
            try:
                kconfig.generate(tree.path, bdir, frags, env)
            except GmemtestError as e:
                raise BuildFailed(BuildStage.CONFIG, str(e)) from None
            stamp_file.write_text(stamp)
        cc = ["CC=ccache gcc"] if shutil.which("ccache") else []
        objects = _run_make(tree.path, bdir, ["bzImage", "headers"],
                            [*cc, f"-j{jobs or os.cpu_count() or 1}",
                             *(f"GCOV_PROFILE_{gcov_stem(f)}.o=y" for f in spec.gcov)],
                            env, progress)
    cold_file = bdir / COLD_OBJECTS
    system_map = bdir / "System.map"
    seconds = time.monotonic() - t0
    m = Manifest(kind=tree.kind, source_path=str(tree.path), version=tree.version,
                 commit=tree.commit,
                 patch_set=tree.patch_set.name if tree.patch_set else None,
                 patches=tree.patch_set.names if tree.patch_set else (), posted=tree.posted,
                 fragments=tuple(f.stem for f in frags), config_hash=config_hash,
                 build_dir=str(bdir), bzimage=str(bdir / BZIMAGE),
                 headers=str(bdir / "usr/include"), config=str(bdir / ".config"),
                 switch=system_map.exists() and SWITCH_SYMBOL in system_map.read_text(),
                 gcov=tuple(f for f in spec.gcov
                            if (bdir / f).with_suffix(".gcno").exists()),
                 build_seconds=round(seconds, 1), objects_compiled=objects,
                 objects_cold=int(cold_file.read_text()) if cold_file.exists() else 0,
                 built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    m.write(bdir / NAME)
    progress.done("build", f"{bdir / BZIMAGE} in {seconds:.0f} s")
    if not fresh:
        with locked(bdir / ".lock"):
            selftests.build(tree.path, bdir / "usr/include", bdir, progress)
    return Build(spec, bdir / BZIMAGE, m, seconds, objects)


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


COMPILE_LINE = re.compile(r"^\s+(CC|AS|LD|AR|HOSTCC|HOSTLD|OBJCOPY|GEN|HDRINST)\b")
# An object of the kernel compiled from C or assembly: kbuild's quiet "CC"/"AS" lines for a
# target in the build tree. Host tools are not counted (objtool's objects, the only "CC" lines
# of the build with an absolute path, nor HOSTCC), nor headers.
OBJECT_LINE = re.compile(r"^\s+(CC|AS)\s+[^/\s]")
# Objects the last build of a build directory from nothing compiled (configuration's size).
COLD_OBJECTS = ".gmemtest-cold-objects"
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
        detail = f"{first} (full log: {build_log})"
        raise BuildFailed(BuildStage.COMPILE, f"kernel build failed: {detail}", detail)
    return objects


def summary(b: Build) -> str:
    """What the build produced, one item a line."""
    m = b.manifest
    if m is None:
        return f"kernel:   {b.label}\nbzImage:  {b.bzimage}"
    return (f"kernel:   {m.label}\nbzImage:  {b.bzimage}\nheaders:  {m.headers}\n"
            f"config:   {m.config} ({' '.join(m.fragments)})\n"
            f"switch:   {'kvm.gmem_in_place_conversion' if m.switch else 'none'}\n"
            f"manifest: {b.dir / NAME if b.dir else '-'}\n"
            f"build:    {b.seconds:.0f} s, {b.objects} objects compiled"
            + (f" (from nothing: {m.objects_cold})" if m.objects_cold else ""))
