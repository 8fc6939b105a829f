"""A patch set: a quilt-style ``series`` file and the patches it names, in order.

The project's own live in kpatches/<base>/ (the Debian base they apply to), one series file per
form of the conversion series: ``series`` is the series as applied upstream, ``series.v8`` the
v8 posting (a prefix of it). A user's patch directory has a ``series`` file of its own. A
base that already contains patches of the series (a kernel the series was merged into) lists
them as ``# in the base: NAME``: they are checked to be in the base, not applied, and the
patch set's name says which patches are carried on top.
Everything is read and checked here, once: a patch set that names a missing or unreadable
patch is one line, before any work.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from gmemtest.errors import GmemtestError

from .checkout import KPATCHES

# The forms of the conversion series kpatches/ carries, and their series files.
FORMS = {"applied": "series", "v8": "series.v8"}
DEFAULT_FORM = "applied"


@dataclass(frozen=True)
class PatchSet:
    """The patches of one series file, in order, and what reports call them."""

    series_file: Path
    patches: tuple[Path, ...]
    name: str
    form: str | None = None  # the conversion series' form, for kpatches/
    # Patches of the series that the base already contains ("# in the base: NAME" lines):
    # not applied; the base must hold each (they come off it, last first, and go back on).
    in_base: tuple[Path, ...] = ()

    @property
    def digest(self) -> str:
        """What a tree patched with these is keyed by."""
        h = hashlib.sha256()
        for p in self.patches:
            h.update(p.read_bytes())
            h.update(b"\0")
        for p in self.in_base:
            h.update(b"in the base: " + p.name.encode() + b"\0")
        return h.hexdigest()[:16]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.patches)

    def patch(self, title: str) -> Path:
        """The patch whose subject is ``title`` (how code and tests name a patch of kpatches/:
        its file name and place differ per base)."""
        for p in self.patches:
            if subject(p.read_text(errors="replace")) == title:
                return p
        raise GmemtestError(f"{self.name}: no patch \"{title}\"")


def subject(text: str) -> str:
    """A patch's subject, unfolded, without its ``[PATCH ...]`` tags."""
    m = re.search(r"^Subject: (.*(?:\n[ \t].*)*)", text, re.M)
    if m is None:
        return ""
    return re.sub(r"^\[PATCH[^\]]*\]\s*", "", " ".join(m.group(1).split()))


def listed(text: str) -> tuple[list[str], list[str]]:
    """What a series file's ``text`` names: the patches to apply, in order, and those marked
    ``# in the base: NAME`` (``#`` starts a comment)."""
    names = [n for ln in text.splitlines() if (n := ln.split("#", 1)[0].strip())]
    marked = [m.group(1) for ln in text.splitlines()
              if (m := re.match(r"^#\s*in the base:\s*(\S+)\s*$", ln))]
    return names, marked


def read(series_file: Path, name: str, form: str | None = None) -> PatchSet:
    """The patch set ``series_file`` lists (``#`` starts a comment); one line when the file or
    a patch it names is missing, unreadable or not a patch."""
    try:
        text = series_file.read_text()
    except FileNotFoundError:
        raise GmemtestError(f"{name}: no series file {series_file}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GmemtestError(f"{name}: cannot read {series_file}: {e}") from None
    names, marked = listed(text)
    patches: list[Path] = []
    in_base: list[Path] = []
    for n in [*names, *marked]:
        p = series_file.parent / n
        try:
            body = p.read_bytes()
        except FileNotFoundError:
            raise GmemtestError(f"{series_file} names {n}, which does not exist") from None
        except OSError as e:
            raise GmemtestError(f"{series_file} names {n}, which cannot be read: "
                                f"{e.strerror}") from None
        if b"\n--- " not in body and not body.startswith(b"--- "):
            raise GmemtestError(f"{series_file} names {n}, which is not a patch (no diff)")
        (in_base if n in marked else patches).append(p)
    if not patches and not in_base:
        raise GmemtestError(f"{series_file}: names no patch")
    if in_base:
        carried = ", ".join(p.name for p in patches) or "nothing"
        name = f"{name}: {len(in_base)} in the base, carrying {carried}"
    return PatchSet(series_file, tuple(patches), name, form, tuple(in_base))


PREVIEW = "PREVIEW"  # in kpatches/<base>/: carried and selectable, not yet a default base


def bases(root: Path = KPATCHES, *, preview: bool = False) -> list[str]:
    """The Debian bases kpatches/ supports (a directory with a series file), oldest first;
    not those in preview (a PREVIEW file says what is missing, only --base takes them) unless
    ``preview``."""
    found = [p.name for p in root.iterdir() if (p / FORMS[DEFAULT_FORM]).is_file()
             and (preview or not (p / PREVIEW).exists())]
    return sorted(found, key=lambda b: tuple(int(x) for x in b.split(".")))


def kpatches(base: str, form: str = DEFAULT_FORM) -> PatchSet:
    """The project's patch set for a Debian base, in one form of the conversion series."""
    if form not in FORMS:
        raise GmemtestError(f"--kpatches {form}: expected one of {', '.join(FORMS)}")
    directory = KPATCHES / base
    if not directory.is_dir():
        have = sorted(p.name for p in KPATCHES.iterdir() if p.is_dir())
        raise GmemtestError(f"kpatches/ has no patches for the base {base} (it has "
                            f"{', '.join(have) or 'none'})")
    return read(directory / FORMS[form], f"kpatches/{base} ({form})", form)


def directory(path: Path) -> PatchSet:
    """A user's patch directory (``--patch-dir``): its ``series`` file."""
    if not path.is_dir():
        raise GmemtestError(f"--patch-dir {path}: no such directory")
    return read(path / "series", str(path))
