"""Comparing a matrix run with an earlier one (its matrix.json): what regressed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError

from .outcome import Outcome


def regressions(current: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """What got worse since ``baseline`` (both matrix.json documents): a cell that passed and
    no longer does or is gone, a test that passed and now fails, skips or is gone, and a kernel
    health finding in a cell that had none."""
    found = []
    for cid, old in baseline.get("cells", {}).items():
        new = current.get("cells", {}).get(cid)
        if new is None:
            found.append(f"{cid}: cell missing from this run")
            continue
        if old.get("ok") and not new.get("ok"):
            found.append(f"{cid}: was PASS, now {new.get('verdict')}")
        if new.get("findings") and not old.get("findings"):
            found.append(f"{cid}: kernel health: {new['findings'][0]}")
        for test, state in old.get("tests", {}).items():
            now = new.get("tests", {}).get(test, "missing")
            if state == Outcome.PASSED and now != Outcome.PASSED:
                found.append(f"{cid}: {test}: passed, now {now}")
    return found


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise GmemtestError(f"--baseline {path}: no such file (an earlier run's "
                            "matrix.json)") from None
    except json.JSONDecodeError as e:
        raise GmemtestError(f"--baseline {path}: not a matrix.json: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), dict):
        raise GmemtestError(f"--baseline {path}: not a matrix.json (no cells)")
    return doc
