"""The kernel under test, as one typed value parsed and checked once at the boundary.

A developer names a kernel in one of four ways: Debian's linux-source of a base with a patch set
(kpatches/ in a form of the conversion series, or their own directory), a kernel tree as it is,
a posted series applied onto either, or a kernel already built. Each way is a :class:`KernelSpec`
whose pieces were checked when it was parsed: the tree is a kernel tree, every patch the series
file names exists, the mbox holds a complete series, the bzImage is one, the fragments exist.
:func:`gmemtest.vmtier.kernel.resolve` turns a spec into one typed build; nothing downstream
parses a path or a string again.

Parsers: :func:`from_options` (the command line's --src, --series, --patch-dir, --kpatches...),
:func:`from_table` (a matrix file's kernel table) and :func:`from_word` (a side of `gmemtest
diff`: a build directory, a bzImage, a patch directory, an mbox, a tree, or ``kpatches`` /
``kpatches:v8``).
"""

from __future__ import annotations

import functools
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gmemtest.cache import cache_dir, write_atomically
from gmemtest.errors import GmemtestError

from . import debian as debian_apt
from . import kconfig, manifest, patchset
from .manifest import Manifest
from .series import Series
from .series import read as read_series

NEWEST = "newest"  # --base: the newest base Debian offers and kpatches/ supports


@dataclass(frozen=True)
class Debian:
    """Debian's linux-source-<base>, fetched into the cache; ``fallback``: why an older base
    than the newest kpatches/ supports was taken (the one line the tool says)."""

    base: str
    fallback: str | None = None

    def label(self) -> str:
        return f"Debian linux-source-{self.base}"


def debian(requested: str = NEWEST) -> Debian:
    """Debian's source of a base: ``requested`` (X.Y), or the newest base among those kpatches/
    supports that the suites offer. When Debian no longer offers the newest supported base,
    an older one is taken and :attr:`Debian.fallback` says so."""
    supported = patchset.bases()
    if requested != NEWEST:
        if not re.fullmatch(r"\d+\.\d+", requested):
            raise GmemtestError(f"--base {requested}: expected a kernel base such as "
                                f"{supported[-1]}, or {NEWEST}")
        return Debian(requested)
    suites = debian_apt.kernel_suites()
    offered = _offered(suites)
    usable = [b for b in supported if b in offered]
    where = " ".join(suites)
    if not offered:  # the mirror did not answer (offline): a fetch will say so if one is due
        return Debian(supported[-1], f"could not learn which linux-source {where} offer: "
                                     f"taking {supported[-1]}, the newest kpatches/ supports")
    if not usable:
        raise GmemtestError(f"{where} offer linux-source {', '.join(offered) or 'none'} and "
                            f"kpatches/ supports {', '.join(supported)}: no base to build "
                            "(pass --src with a kernel tree)")
    if usable[-1] == supported[-1]:
        return Debian(usable[-1])
    return Debian(usable[-1], f"linux-source-{supported[-1]} is not in {where} (they offer "
                              f"{', '.join(offered)}; kpatches/ supports "
                              f"{', '.join(supported)}): taking {usable[-1]}")


OFFERED_SECONDS = 3600  # how long what the suites offer is taken as known


@functools.cache
def _offered(suites: tuple[str, ...]) -> tuple[str, ...]:
    """The bases the suites offer: asked of the mirror at most once an hour (an apt update
    takes seconds, and every command naming Debian's source needs the answer)."""
    kept = cache_dir("apt") / f"offered-{'+'.join(suites)}.json"
    try:
        doc = json.loads(kept.read_text())
        if time.time() - float(doc["at"]) < OFFERED_SECONDS and \
                all(isinstance(b, str) for b in doc["bases"]):
            return tuple(doc["bases"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        bases = debian_apt.PrivateApt(suites).offered_bases()
    except GmemtestError:
        return ()
    if bases:  # an empty answer is a mirror out of reach: ask again next time
        write_atomically(kept, json.dumps({"at": time.time(), "bases": bases}).encode())
    return tuple(bases)


def tree_base(path: Path) -> str:
    """The base X.Y a kernel tree is (its Makefile's VERSION and PATCHLEVEL)."""
    try:
        head = (path / "Makefile").read_text(errors="replace")[:2000]
    except OSError as e:
        raise GmemtestError(f"{path}/Makefile: {e.strerror}") from None
    v = re.search(r"^VERSION = (\d+)$", head, re.M)
    p = re.search(r"^PATCHLEVEL = (\d+)$", head, re.M)
    if not v or not p:
        raise GmemtestError(f"{path}/Makefile names no VERSION and PATCHLEVEL")
    return f"{v.group(1)}.{p.group(1)}"


@dataclass(frozen=True)
class Tree:
    """A kernel tree, built as it is (``build_dir``: where, e.g. inside the tree for ccache)."""

    path: Path
    build_dir: Path | None = None

    def label(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Posted:
    """A posted series, read from its mbox, to be applied with git am onto a base."""

    series: Series
    onto: Debian | Tree

    def label(self) -> str:
        return f"{self.series.title()} on {self.onto.label()}"


@dataclass(frozen=True)
class Prebuilt:
    """A kernel already built: its bzImage, and its build's manifest when it has one."""

    bzimage: Path
    manifest: Manifest | None

    def label(self) -> str:
        return self.manifest.label if self.manifest else str(self.bzimage)


Source = Debian | Tree | Posted | Prebuilt


@dataclass(frozen=True)
class KernelSpec:
    """The kernel under test: a source, the patch set applied to it, its kconfig fragments."""

    source: Source
    patches: patchset.PatchSet | None = None
    fragments: tuple[str, ...] = kconfig.DEFAULT_FRAGMENTS
    # Source files (relative to the tree) built with gcov instrumentation: a coverage build.
    gcov: tuple[str, ...] = ()

    def label(self) -> str:
        text = self.source.label()
        if self.patches is not None:
            text += f" + {self.patches.name}"
        return text

    def on_tree(self, path: Path, build_dir: Path | None = None) -> KernelSpec:
        """This kernel's configuration built from ``path``, a tree already prepared (a series
        tree at some commit, a mutant's scratch copy) as it is."""
        return replace(self, source=Tree(path, build_dir), patches=None)

    def with_fragments(self, fragments: tuple[str, ...]) -> KernelSpec:
        kconfig.fragment_paths(list(fragments))
        return replace(self, fragments=fragments)

    def with_gcov(self, files: tuple[str, ...]) -> KernelSpec:
        """The coverage build of this kernel: ``files`` instrumented, the coverage fragment
        added."""
        frags = self.fragments if "coverage" in self.fragments else (*self.fragments,
                                                                      "coverage")
        return replace(self, fragments=frags, gcov=tuple(sorted(files)))


def tree(path: Path, what: str = "--src", build_dir: Path | None = None) -> Tree:
    """A kernel tree named on the command line or in a file; one line when it is not one."""
    if not path.is_dir():
        raise GmemtestError(f"{what} {path}: no such directory")
    if not (path / "Makefile").is_file() or not (path / "virt/kvm").is_dir():
        raise GmemtestError(f"{what} {path}: not a Linux source tree (no Makefile or virt/kvm/)")
    return Tree(path.resolve(), build_dir)


def built(word: str) -> KernelSpec:
    """A kernel already built, as `vm run --kernel` names it: a build directory or a
    bzImage."""
    return KernelSpec(prebuilt(Path(word)))


def current_tree(src: str | None, build_dir: str | None) -> KernelSpec:
    """The tree a `git bisect run` step builds: ``--src`` or the current directory."""
    return KernelSpec(tree(Path(src or "."), "--src" if src else "the current directory",
                           build_dir=Path(build_dir) if build_dir else None))


def prebuilt(path: Path) -> Prebuilt:
    """A built kernel: its build directory (with a manifest) or a bzImage."""
    if path.is_dir():
        if not (path / manifest.NAME).exists():
            raise GmemtestError(f"{path}: a directory without {manifest.NAME}, not a kernel "
                                "build")
        m = manifest.read(path / manifest.NAME)
        return Prebuilt(manifest.check_bzimage(Path(m.bzimage)), m)
    bz = manifest.check_bzimage(path)
    return Prebuilt(bz, manifest.of_bzimage(bz))


def from_options(*, src: str | None = None, series: str | None = None,
                 series_version: int | None = None, patches: bool | None = None,
                 patch_dir: str | None = None, kpatches: str | None = None,
                 base: str | None = None, fragments: tuple[str, ...] | None = None,
                 build_dir: str | None = None) -> KernelSpec:
    """The kernel the command line names. ``patches`` (--patches/--no-patches) defaults to on
    for Debian's source and off for a tree; ``--patch-dir`` and ``--kpatches`` imply it.
    ``base`` (--base) picks Debian's source; kpatches/ on a tree are those of its base."""
    frags = fragments or kconfig.DEFAULT_FRAGMENTS
    kconfig.fragment_paths(list(frags))
    if src is not None and base is not None:
        raise GmemtestError("--base picks Debian's source and --src names a tree: give one")
    where: Debian | Tree = debian(base or NEWEST) if src is None else tree(
        Path(src), build_dir=Path(build_dir) if build_dir else None)
    if series is not None:
        if patch_dir is not None or kpatches is not None or patches:
            raise GmemtestError("--series is the patches: drop --patch-dir, --kpatches and "
                                "--patches")
        return KernelSpec(Posted(read_series(Path(series), series_version), where),
                          None, frags)
    if series_version is not None:
        raise GmemtestError("--series-version needs --series MBOX")
    if patch_dir is not None and kpatches is not None:
        raise GmemtestError("--patch-dir and --kpatches name two patch sets: give one")
    if patches is False and (patch_dir is not None or kpatches is not None):
        raise GmemtestError("--no-patches with a patch set: drop one of them")
    want = patches if patches is not None else (
        isinstance(where, Debian) or patch_dir is not None or kpatches is not None)
    ps = None
    if want:
        if patch_dir is not None:
            ps = patchset.directory(Path(patch_dir))
        else:
            on = where.base if isinstance(where, Debian) else tree_base(where.path)
            ps = patchset.kpatches(on, kpatches or patchset.DEFAULT_FORM)
    return KernelSpec(where, ps, frags)


def from_word(word: str, base: str | None = None) -> KernelSpec:
    """A side of `gmemtest diff`: ``kpatches`` or ``kpatches:FORM``, a build directory or a
    bzImage, a patch directory (a ``series`` file), a series mbox, or a kernel tree; Debian's
    source is that of ``base`` (the newest supported by default)."""
    if word == "kpatches" or word.startswith("kpatches:"):
        form = word.partition(":")[2] or patchset.DEFAULT_FORM
        src = debian(base or NEWEST)
        return KernelSpec(src, patchset.kpatches(src.base, form))
    p = Path(word)
    if not p.exists():
        raise GmemtestError(f"{word}: no such file or directory (expected a built kernel, a "
                            "patch directory, a series mbox, a kernel tree or kpatches[:FORM])")
    if p.is_dir() and (p / manifest.NAME).exists():
        return KernelSpec(prebuilt(p))
    if p.is_dir() and (p / "series").is_file():
        return KernelSpec(debian(base or NEWEST), patchset.directory(p))
    if p.is_dir():
        return KernelSpec(tree(p, what="kernel tree"))
    try:
        bootable = manifest.is_bzimage(p)
    except OSError as e:
        raise GmemtestError(f"{word}: cannot read it: {e.strerror}") from None
    if bootable:
        return KernelSpec(prebuilt(p))
    return KernelSpec(Posted(read_series(p), debian(base or NEWEST)))


def from_table(name: str, table: Any, where: str, relative_to: Path) -> KernelSpec:
    """A matrix file's ``[kernels.NAME]`` table (its fragments come from the config)."""
    keys = {"source", "base", "patches", "kpatches", "series", "series_version"}
    if not isinstance(table, dict) or set(table) - keys:
        raise GmemtestError(f"{where}: expected a table with the keys {', '.join(sorted(keys))}")
    for key in ("source", "base", "patches", "kpatches", "series"):
        if key in table and not isinstance(table[key], str) \
                and not (key == "patches" and table[key] is False):
            raise GmemtestError(f"{where}: {key} must be a string"
                                + (" (or false)" if key == "patches" else ""))
    version = table.get("series_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                or not 1 <= version <= 999):
        raise GmemtestError(f"{where}: series_version must be a whole number from 1 to 999")
    source = table.get("source", "debian")
    src = None if source == "debian" else str(relative_to / source)
    patch_dir = table.get("patches")
    if patch_dir == "kpatches":  # the project's own, in their default form
        patch_dir = None
        table = {**table, "kpatches": table.get("kpatches", patchset.DEFAULT_FORM)}
    try:
        return from_options(
            src=src, series=str(relative_to / table["series"]) if "series" in table else None,
            series_version=version, patches=False if patch_dir is False else None,
            patch_dir=str(relative_to / patch_dir) if isinstance(patch_dir, str) else None,
            kpatches=table.get("kpatches"), base=table.get("base"))
    except GmemtestError as e:
        raise GmemtestError(f"{where}: {e}") from None
