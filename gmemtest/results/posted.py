"""A posted series as every record and report names a kernel built from it (a build's
manifest, a matrix cell, KCIDB's checkout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .shape import check


@dataclass(frozen=True)
class PostedInfo:
    """A posted series a kernel was built from: its subject, version, Message-Id, how many
    patches, and the tree it was applied onto."""

    subject: str
    version: int
    msgid: str
    count: int
    base: str  # the tree it was applied onto

    def title(self) -> str:
        return f'series v{self.version} "{self.subject}" ({self.count} patches, <{self.msgid}>)'

    @classmethod
    def of(cls, doc: Any, where: str) -> PostedInfo:
        """One as a JSON document holds it; one line (a GmemtestError) for another shape."""
        check(doc, SHAPE, where)
        return cls(**doc)


SHAPE = {"subject": str, "version": int, "msgid": str, "count": int, "base": str}
