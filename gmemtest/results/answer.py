"""What every command answers the user, in one type: the command line prints it (cli/)."""

from __future__ import annotations

from dataclasses import dataclass

from .report import BootReport, not_run


@dataclass(frozen=True)
class Answer:
    """A command's exit status and the report it prints (stdout); ``no_verdict``: why there
    is none (a boot, side or cell that did not run its tests), said first, on stderr."""

    status: int
    text: str = ""
    no_verdict: str | None = None

    @classmethod
    def of_boots(cls, boots: list[BootReport], text: str) -> Answer:
        """A main job's answer: 2 when a boot did not run its tests, 1 when one failed."""
        why = not_run(boots)
        if why:
            return cls(2, text, why)
        return cls(0 if all(b.ok for b in boots) else 1, text)
