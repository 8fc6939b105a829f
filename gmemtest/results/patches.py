"""A series as patches, hunks and lines, with each added line's place in the tree that has
every patch applied (filled in by gmemtest.vmtier.patchlines): what a coverage report of the
series is drawn on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")


@dataclass
class Line:
    """One line of a hunk as the patch shows it: its kind ('+', '-' or ' '), its text, and
    for an added line the line of the tip it became (None: a later patch changed it)."""

    kind: str
    text: str
    tip: int | None = None


@dataclass
class Hunk:
    file: str
    header: str  # the @@ line
    lines: list[Line] = field(default_factory=list)


@dataclass
class Patch:
    index: int  # 1-based, in series order
    subject: str
    commit: str
    hunks: list[Hunk] = field(default_factory=list)
