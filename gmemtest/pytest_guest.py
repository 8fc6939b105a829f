"""pytest plugin for runs inside the guest (``-p gmemtest.pytest_guest``).

- After each test, the kernel log records logged since the previous test are read from
  /dev/kmsg and written to ``$GMEMTEST_RESULTS/kmsg-<worker>.jsonl`` with the test that was
  running; with xdist each worker keeps its own file and the host joins them by record sequence
  number, so a report names every test that was running when it was logged.
- At the end the controller writes ``results.ktap`` (KTAP v1, Documentation/dev-tools/ktap.rst).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gmemtest import health

RESULTS = Path(os.environ.get("GMEMTEST_RESULTS", "/tmp/results"))


class KmsgRecorder:
    """Reads /dev/kmsg non-blocking; each open has its own position, starting at the oldest
    record still in the buffer (so boot messages are read before the first test)."""

    def __init__(self, out: Path) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        self.out = open(out, "a")

    def drain(self, test: str) -> None:
        for r in health.read_kmsg(self.fd):
            self.out.write(json.dumps({"seq": r.seq, "level": r.level, "usec": r.usec,
                                       "test": test, "msg": r.msg}) + "\n")
        self.out.flush()

    def close(self) -> None:
        os.close(self.fd)
        self.out.close()


class GuestPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.kmsg = KmsgRecorder(RESULTS / f"kmsg-{worker}.jsonl") \
            if os.path.exists("/dev/kmsg") else None
        self.reports: dict[str, dict[str, Any]] = {}
        if self.kmsg:
            self.kmsg.drain("(before tests)")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Any:
        yield
        if self.kmsg:
            self.kmsg.drain(item.nodeid)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.reports.setdefault(report.nodeid, {"outcome": "passed", "reason": ""})
        if report.skipped and report.when in ("setup", "call"):
            entry["outcome"] = "xfail" if hasattr(report, "wasxfail") else "skipped"
            longrepr = report.longrepr
            entry["reason"] = (longrepr[2] if isinstance(longrepr, tuple)
                               else getattr(report, "wasxfail", ""))
        elif report.failed:
            entry["outcome"] = "failed"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.kmsg:
            self.kmsg.drain("(after tests)")
            self.kmsg.close()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            return
        (RESULTS / "results.ktap").write_text(ktap(self.reports))


def ktap(reports: dict[str, dict[str, Any]]) -> str:
    """KTAP v1 for the whole run: one line per test, SKIP/XFAIL directives with reasons."""
    lines = ["KTAP version 1", f"1..{len(reports)}"]
    for n, (nodeid, r) in enumerate(reports.items(), 1):
        name = re.sub(r"[#\s]+", "_", nodeid)
        if r["outcome"] == "skipped":
            lines.append(f"ok {n} {name} # SKIP {r['reason']}")
        elif r["outcome"] == "xfail":
            lines.append(f"ok {n} {name} # XFAIL {r['reason']}")
        else:
            lines.append(f"{'ok' if r['outcome'] == 'passed' else 'not ok'} {n} {name}")
    return "\n".join(lines) + "\n"


def pytest_configure(config: pytest.Config) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    config.pluginmanager.register(GuestPlugin(config), "gmemtest-guest")
