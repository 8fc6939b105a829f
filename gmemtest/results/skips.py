"""The skips a boot may have (gmemtest/results/expected_skips.toml), and the ones it may not.

A boot of the kernel under test is green only when it tested what it was asked to: every
skip must be one its kind of boot is allowed (the other mode's conversion route, VM types
this platform lacks, ...), each listed with why and when it goes away. Any other skip fails
the boot, named.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from gmemtest.errors import GmemtestError

from .contract import BootKind
from .outcome import Outcome, TestResult

DATA = Path(__file__).with_name("expected_skips.toml")
ANY = "any"


@dataclass(frozen=True)
class Allowed:
    """A skip some boots may have: a test needing ``need`` (or whose reason starts with
    ``reason``), in boots of ``boots``."""

    need: str | None
    reason: str | None
    boots: frozenset[str]
    why: str
    until: str

    def allows(self, kind: BootKind, message: str) -> bool:
        if ANY not in self.boots and kind.value not in self.boots:
            return False
        if self.need is not None:
            return message.startswith(f"needs {self.need}:")
        return self.reason is not None and message.startswith(self.reason)


@cache
def allowed(path: Path = DATA) -> tuple[Allowed, ...]:
    """The expected skips, checked once: a damaged entry is one line."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise GmemtestError(f"{path}: {e}") from None
    kinds = {k.value for k in BootKind} | {ANY}
    out = []
    for i, entry in enumerate(data.get("skip", [])):
        where = f"{path.name}: skip {i + 1}"
        if not isinstance(entry, dict) or set(entry) - {"need", "reason", "boots", "why",
                                                         "until"}:
            raise GmemtestError(f"{where}: keys are need or reason, boots, why, until")
        need, reason = entry.get("need"), entry.get("reason")
        if (need is None) == (reason is None):
            raise GmemtestError(f"{where}: give need or reason, one of them")
        boots = entry.get("boots")
        if not isinstance(boots, list) or not boots or set(boots) - kinds:
            raise GmemtestError(f"{where}: boots is a list of {', '.join(sorted(kinds))}")
        if not all(isinstance(entry.get(k), str) and entry[k] for k in ("why", "until")):
            raise GmemtestError(f"{where}: why and until say why it skips and when that ends")
        out.append(Allowed(need, reason, frozenset(boots), entry["why"], entry["until"]))
    return tuple(out)


def unexpected(kind: BootKind, results: list[TestResult]) -> list[TestResult]:
    """The skips among ``results`` that a boot of ``kind`` may not have."""
    rules = allowed()
    return [r for r in results if r.outcome is Outcome.SKIPPED
            and not any(a.allows(kind, r.message) for a in rules)]
