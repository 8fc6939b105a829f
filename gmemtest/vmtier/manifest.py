"""What `gmemtest kernel build` records next to every kernel it builds
(``<build dir>/gmemtest-manifest.json``), read back as one typed value: what the kernel was built
from (its source, patch set or posted series, kconfig), where its pieces are, and whether it has
the in-place conversion switch. A bzImage is traced back to its build one way: the manifest of
the build directory it lies in (:func:`of_bzimage`). A damaged manifest is one line."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.results import posted
from gmemtest.results.posted import PostedInfo
from gmemtest.results.shape import ListOf, Maybe, check, read_json

NAME = "gmemtest-manifest.json"
BZIMAGE = Path("arch/x86/boot/bzImage")  # where a build directory holds its kernel


@dataclass(frozen=True)
class Manifest:
    """One built kernel: its source (``kind`` debian or tree, path, version, commit), the patch
    set applied to it (its name and patch file names) or the posted series it holds, the
    kconfig fragments, the build's outputs and figures."""

    kind: str
    source_path: str
    version: str
    commit: str | None
    patch_set: str | None
    patches: tuple[str, ...]
    posted: PostedInfo | None
    fragments: tuple[str, ...]
    config_hash: str
    build_dir: str  # where it was built: its .config, objects, headers and selftests
    bzimage: str
    headers: str
    config: str
    switch: bool  # the kernel defines kvm.gmem_in_place_conversion
    gcov: tuple[str, ...]  # source files built with gcov instrumentation (a coverage build)
    build_seconds: float
    objects_compiled: int
    objects_cold: int
    built_at: str

    @property
    def label(self) -> str:
        """The kernel in one phrase, for every report."""
        base = self.commit or self.version
        if self.posted is not None:
            return f"{self.posted.title()} on {self.posted.base}"
        if self.patch_set is not None:
            return f"{base} + {self.patch_set}, {len(self.patches)} patches"
        return base

    def write(self, path: Path) -> None:
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2) + "\n")


NUMBER = (int, float)
SHAPE = {"kind": str, "source_path": str, "version": str, "commit": Maybe(str),
         "patch_set": Maybe(str), "patches": ListOf(str), "posted": Maybe(posted.SHAPE),
         "fragments": ListOf(str), "config_hash": str, "build_dir": str, "bzimage": str,
         "headers": str, "config": str, "switch": bool, "gcov": ListOf(str),
         "build_seconds": NUMBER, "objects_compiled": int, "objects_cold": int, "built_at": str}


def read(path: Path) -> Manifest:
    """The manifest at ``path``; one line saying what is wrong with a damaged one."""
    data = read_json(path, "a build manifest", f"{path}: no such manifest (build the kernel "
                     "with `gmemtest kernel build`)", hint="; build the kernel again")
    try:
        check(data, SHAPE, "manifest")
    except GmemtestError as e:
        raise GmemtestError(f"{path}: not a build manifest of this gmemtest ({e}); build the "
                            "kernel again") from None
    posted = PostedInfo(**data["posted"]) if data["posted"] is not None else None
    return Manifest(**{**data, "patches": tuple(data["patches"]),
                       "fragments": tuple(data["fragments"]), "gcov": tuple(data["gcov"]),
                       "posted": posted})


def build_dir(bzimage: Path) -> Path | None:
    """The kernel build directory a bzImage lies in (at arch/x86/boot/bzImage, next to the
    build's .config), whoever built it; None for a bzImage copied elsewhere."""
    path = bzimage.resolve()
    parents = path.parents
    if len(parents) > 3 and path == parents[3] / BZIMAGE and (parents[3] / ".config").is_file():
        return parents[3]
    return None


def of_bzimage(bzimage: Path) -> Manifest | None:
    """The manifest of the build a bzImage came from, when gmemtest built it."""
    directory = build_dir(bzimage)
    if directory is not None and (directory / NAME).exists():
        return read(directory / NAME)
    return None


def is_bzimage(path: Path) -> bool:
    """Whether the file at ``path`` is an x86 bzImage: its setup header has the boot flag
    0xAA55 and the "HdrS" magic (OSError when it cannot be read)."""
    with open(path, "rb") as f:
        head = f.read(0x210)
    return len(head) >= 0x206 and head[0x1FE:0x200] == b"\x55\xaa" and \
        head[0x202:0x206] == b"HdrS"


def check_bzimage(path: Path) -> Path:
    """``path`` resolved, when it is an x86 bzImage; one line saying what it is otherwise."""
    try:
        bootable = is_bzimage(path)
    except FileNotFoundError:
        raise GmemtestError(f"{path}: no such kernel image (build one with `gmemtest kernel "
                            "build`)") from None
    except IsADirectoryError:
        raise GmemtestError(f"{path}: a directory, not a kernel image") from None
    except OSError as e:
        raise GmemtestError(f"{path}: cannot read it: {e.strerror}") from None
    if not bootable:
        raise GmemtestError(f"{path}: not an x86 bzImage (no boot sector flag and HdrS setup "
                            "header): pass the arch/x86/boot/bzImage of a kernel build")
    return path.resolve()
