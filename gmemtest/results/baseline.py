"""Comparing a matrix run with an earlier one (its matrix.json): what regressed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmemtest.errors import GmemtestError

from .outcome import Outcome
from .shape import ListOf, MapOf, check, read_json


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
    for name, old_cov in baseline.get("coverage", {}).items():
        new_cov = current.get("coverage", {}).get(name)
        if new_cov is None:
            found.append(f"{name}: coverage not measured in this run")
            continue
        for line in sorted(set(old_cov["run"]) - set(new_cov["run"])):
            found.append(f"{name}: no longer run: {line}")
    return found


# What of a matrix.json a comparison reads (its other keys are free).
CELL = {"ok": bool, "verdict": str, "findings": ListOf(str), "tests": MapOf(str)}
COVERAGE = {"headline": MapOf(object), "run": ListOf(str)}


def coverage_headline(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A coverage group's headline in a matrix.json (a baseline's); None: it had none."""
    entry = doc.get("coverage", {}).get(name)
    return entry.get("headline") if isinstance(entry, dict) else None


def load_baseline(path: Path) -> dict[str, Any]:
    """An earlier run's matrix.json; one line when it is not one."""
    doc = read_json(path, "a matrix.json", f"--baseline {path}: no such file (an earlier "
                    "run's matrix.json)", name=f"--baseline {path}")
    try:
        check(doc, dict, "matrix.json")
        assert isinstance(doc, dict)
        check(doc.get("cells"), MapOf(dict), "matrix.json.cells")
        for cid, cell in doc["cells"].items():
            check({k: cell.get(k) for k in CELL}, CELL, f"matrix.json.cells.{cid}")
            for test, state in cell["tests"].items():
                if state not in set(Outcome) and state != "missing":
                    raise GmemtestError(f"matrix.json.cells.{cid}.tests.{test}: {state!r} is "
                                        "no outcome")
        check(doc.get("coverage", {}), MapOf(dict), "matrix.json.coverage")
        for name, entry in doc.get("coverage", {}).items():
            check({k: entry.get(k) for k in COVERAGE}, COVERAGE, f"matrix.json.coverage.{name}")
    except GmemtestError as e:
        raise GmemtestError(f"--baseline {path}: not a matrix.json ({e})") from None
    return doc
