"""pytest plugin for runs inside the guest (``-p gmemtest.testing.guest_writer``).

- After each test, the kernel log records logged since the previous test are read from
  /dev/kmsg and written to ``$GMEMTEST_RESULTS/kmsg-<worker>.jsonl`` with the test that was
  running; with xdist each worker keeps its own file and the host joins them by record sequence
  number, so a report names every test that was running when it was logged.
- Tests named in ``$GMEMTEST_RESULTS/test-limits.json`` get their own pytest-timeout limit
  there, in place of ``--timeout``.
- The controller appends each test's start and its outcome to ``progress.jsonl`` as they
  happen: when the kernel crashes and takes the guest with it, the host knows which tests had
  run and which one was running (gmemtest.results.progress); the fresh boot that runs the
  rest lists the tests already done in ``done.txt``, and they are deselected here.
- At the end the controller writes ``results.ktap`` (KTAP v1, gmemtest.results.ktap): every
  test's outcome, a failure's message and the kernel reports logged while a test ran as
  diagnostic lines.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from gmemtest.results import health, ktap, progress
from gmemtest.results.outcome import Outcome, TestResult

from . import TEST_LIMITS
from .plugin import is_kernel_test, properties

RESULTS = Path(os.environ.get("GMEMTEST_RESULTS", "/tmp/results"))


class KmsgRecorder:
    """Reads /dev/kmsg non-blocking; each open has its own position, starting at the oldest
    record still in the buffer (so boot messages are read before the first test)."""

    def __init__(self, out: Path) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        self.out = open(out, "a")

    def drain(self, test: str) -> list[str]:
        """Record what the kernel logged since the last drain; return its reports."""
        found = []
        for r in health.read_kmsg(self.fd):
            self.out.write(json.dumps({"seq": r.seq, "level": r.level, "usec": r.usec,
                                       "test": test, "msg": r.msg}) + "\n")
            if health.classify(r.msg):
                found.append(r.msg.strip())
        self.out.flush()
        return found

    def close(self) -> None:
        os.close(self.fd)
        self.out.close()


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


class GuestPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # Guest uptime at each step from pytest's start to the first result (phases.json):
        # where a boot's time before its first test goes (gmemtest.results.phases).
        self.phases = {"pytest_configured": _uptime()}
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.kmsg = KmsgRecorder(RESULTS / f"kmsg-{worker}.jsonl") \
            if os.path.exists("/dev/kmsg") else None
        self.results: dict[str, TestResult] = {}
        self.progress = None if worker != "main" else open(RESULTS / progress.FILE, "a")
        self.findings: list[str] = []
        if self.kmsg:
            self.findings += self.kmsg.drain("(before tests)")

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        self.phases.setdefault("collection_start", _uptime())

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        done_file = RESULTS / progress.DONE
        if done_file.exists():
            done = set(done_file.read_text().splitlines())
            config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
            items[:] = [i for i in items if i.nodeid not in done]
        # What this boot runs, the tests of the kernel (those that open /dev/kvm) told from
        # the harness's own: for the report's count, and for what is left after a crash.
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        (RESULTS / f"{progress.COLLECTED}-{worker}.txt").write_text("".join(
            f"{progress.KERNEL if is_kernel_test(i) else progress.HARNESS} {i.nodeid}\n"
            for i in items))
        limits = RESULTS / TEST_LIMITS
        own = json.loads(limits.read_text()) if limits.exists() else {}
        for item in items:
            if item.nodeid in own:
                item.add_marker(pytest.mark.timeout(own[item.nodeid]))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.phases.setdefault("collection_end", _uptime())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Any) -> Any:
        yield
        if self.kmsg:
            self.findings += [f"{item.nodeid}: {f}" for f in self.kmsg.drain(item.nodeid)]

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._record({"start": nodeid})

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        r = self.results.get(nodeid)
        if r is not None:
            self._record({"done": nodeid, "outcome": r.outcome.value, "message": r.message})

    def _record(self, line: dict[str, str]) -> None:
        if self.progress is not None:
            self.progress.write(json.dumps(line) + "\n")
            self.progress.flush()  # the share has no cache: the host sees it now

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = outcome_of(report)
        if result is not None:
            self.phases.setdefault("first_result", _uptime())
        if result is not None and (report.nodeid not in self.results
                                   or self.results[report.nodeid].outcome.ok):
            self.results[report.nodeid] = result

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.kmsg:
            self.findings += self.kmsg.drain("(after tests)")
            self.kmsg.close()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            return
        (RESULTS / "results.ktap").write_text(
            ktap.document(self.results.values(), self.findings, header=properties()))
        (RESULTS / "phases.json").write_text(json.dumps(self.phases) + "\n")


def outcome_of(report: pytest.TestReport) -> TestResult | None:
    """What one phase's report says of its test (None: nothing new, e.g. a passing teardown)."""
    name = report.nodeid
    if report.skipped and report.when in ("setup", "call"):
        if hasattr(report, "wasxfail"):
            return TestResult(name, Outcome.XFAILED, report.wasxfail)
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return TestResult(name, Outcome.SKIPPED, reason.removeprefix("Skipped: "))
    if report.failed:
        text = report.longreprtext
        if report.when != "call":
            return TestResult(name, Outcome.ERROR, f"{report.when} failed: {_last(text)}")
        if "Timeout >" in text:
            return TestResult(name, Outcome.TIMEOUT, _last(text))
        return TestResult(name, Outcome.FAILED, _last(text))
    if report.when == "call":
        return TestResult(name, Outcome.PASSED)
    return None


def _last(text: str) -> str:
    """The lines of a traceback that say what went wrong: pytest's 'E' lines, else the last."""
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    return "\n".join(lines[:6]) or (text.strip().splitlines() or [""])[-1]


def pytest_configure(config: pytest.Config) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    config.pluginmanager.register(GuestPlugin(config), "gmemtest-guest")
