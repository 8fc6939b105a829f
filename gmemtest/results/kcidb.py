"""A matrix's results in KernelCI's KCIDB format (schema v5): the checkouts (a kernel's source
and the patches on it), the builds (a checkout with a kconfig set) and the tests (every test of
every cell, and a ``kernel_health`` test per cell carrying the kernel's reports as its log
excerpt). The kcidb-io package's schema validates what this writes (in the tests)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from gmemtest.errors import BuildStage

from .cells import CellResult
from .outcome import Outcome, TestResult

ORIGIN = "gmemtest"
VERSION = {"major": 5, "minor": 3}
# A known deviation (xfail) completed without saying whether the kernel is right: DONE.
STATUS = {Outcome.PASSED: "PASS", Outcome.FAILED: "FAIL", Outcome.ERROR: "ERROR",
          Outcome.TIMEOUT: "ERROR", Outcome.SKIPPED: "SKIP", Outcome.XFAILED: "DONE"}
EXCERPT = 16384  # the schema's limit on a log excerpt


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _ident(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_") or "_"


def test_path(name: str) -> str:
    """A pytest test id as a KCIDB test path: ``gmemtest.MODULE.TEST[.PARAMS]``."""
    name = name.removeprefix("tests.").removeprefix("tests/")
    if "::" not in name:
        return f"{ORIGIN}.{_ident(name)}"
    module, _, test = name.partition("::")
    test, _, params = test.partition("[")
    parts = [ORIGIN, _ident(module.removesuffix(".py").replace("/", ".").split(".")[-1]),
             _ident(test)]
    if params:
        parts.append(_ident(params.rstrip("]")))
    return ".".join(parts)


def _checkout_id(r: CellResult) -> str:
    return f"{ORIGIN}:{_ident(r.kernel_name)}-{_digest(r.source, r.patches)}"


def _build_id(r: CellResult) -> str:
    return f"{ORIGIN}:{_ident(r.kernel_name)}-{_ident(r.config)}-" \
           f"{_digest(r.source, r.patches, r.fragments)}"


def _excerpt(text: str) -> str:
    text = text.replace("\0", "")
    return text if len(text) <= EXCERPT else text[:EXCERPT - 4] + "...\n"


def document(results: list[CellResult]) -> dict[str, Any]:
    """The KCIDB document of a matrix's cells."""
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: list[dict[str, Any]] = []
    for r in results:
        cid, bid = _checkout_id(r), _build_id(r)
        checkout: dict[str, Any] = {
            "id": cid, "origin": ORIGIN, "tree_name": _ident(r.kernel_name),
            "comment": f"{r.source or 'unknown source'}"
                       + (f" + {len(r.patches)} patches" if r.patches else ""),
            "valid": r.build_stage != BuildStage.APPLY,
            "misc": {"patches": r.patches}}
        if r.series:
            checkout["message_id"] = r.series.msgid
            checkout["comment"] += (f" + series v{r.series.version} \"{r.series.subject}\""
                                    f" ({r.series.count} patches)")
        checkouts.setdefault(cid, checkout)
        build: dict[str, Any] = {
            "id": bid, "checkout_id": cid, "origin": ORIGIN, "architecture": "x86_64",
            "config_name": r.config, "comment": f"{r.kernel_name}/{r.config}",
            "status": "FAIL" if r.outcome is None else "PASS",
            "misc": {"fragments": r.fragments}}
        if r.build_seconds is not None:
            build["duration"] = round(r.build_seconds, 1)
        if r.outcome is None and r.problem:
            build["log_excerpt"] = _excerpt(r.problem)
        if r.started:
            build["start_time"] = r.started
        builds.setdefault(bid, build)
        if r.outcome is None:
            continue
        accel = r.outcome.run.accel if r.outcome.run else ""
        environment = {"comment": f"QEMU ({accel}); kernel command line: "
                                  f"{' '.join(r.cmdline) or '(default)'}"}
        for n, t in enumerate([*r.outcome.results, _health(r)], 1):
            test: dict[str, Any] = {
                "id": f"{ORIGIN}:{r.slug}:{n}", "build_id": bid, "origin": ORIGIN,
                "path": test_path(t.name), "status": STATUS[t.outcome], "comment": t.name,
                "environment": environment, "misc": {"cell": r.id, "cmdline": r.cmdline}}
            if t.message:
                test["log_excerpt"] = _excerpt(t.message)
            if r.started:
                test["start_time"] = r.started
            tests.append(test)
    return {"version": VERSION, "checkouts": list(checkouts.values()),
            "builds": list(builds.values()), "tests": tests}


def _health(r: CellResult) -> TestResult:
    """The cell's kernel health as a test: its findings (WARN, BUG, Oops, KASAN, lockdep...)
    as the log, an error when the boot itself failed."""
    assert r.outcome is not None
    name = "kernel_health"
    if r.outcome.problem:
        return TestResult(name, Outcome.ERROR, r.outcome.problem)
    if r.outcome.findings:
        return TestResult(name, Outcome.FAILED, "\n".join(str(f) for f in r.outcome.findings))
    return TestResult(name, Outcome.PASSED)


def write(results: list[CellResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document(results), indent=1) + "\n")
