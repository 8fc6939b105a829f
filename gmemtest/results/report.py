"""Reading a guest run's results: its tests' outcomes from JUnit, skip reasons and kernel health
findings, judged into one verdict per boot."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gmemtest.errors import GmemtestError

from . import contract, health, progress, skips
from .contract import BootKind
from .outcome import Outcome, TestResult, short
from .run import Crash, Ended, Run


@dataclass
class BootReport:
    """The verdict on one boot, and what it rests on."""

    label: str
    run: Run | None
    results: list[TestResult] = field(default_factory=list)
    findings: list[health.Finding] = field(default_factory=list)
    problem: str | None = None
    tallies: list[dict[str, object]] = field(default_factory=list)  # reliability tests' counts
    ended: Ended = Ended.TESTS_RAN
    # What the guest's pytest recorded of the kernel under test (its JUnit properties): the
    # revision of the conversion series it implements, the one the tests expected.
    properties: dict[str, str] = field(default_factory=dict)
    asked: contract.Contract | None = None  # what the boot was asked to test (its contract)
    crashes: list[Crash] = field(default_factory=list)  # kernel crashes under tests
    kernel_tests: set[str] = field(default_factory=set)  # the collected tests of the kernel

    def revision(self) -> str | None:
        """The revision line of the report, when the run recorded one."""
        p = self.properties
        if "gmemtest_revision" not in p:
            return None
        text = f"{p['gmemtest_revision']} ({p.get('gmemtest_revision_source', '?')})"
        if p.get("gmemtest_expected_revision", p["gmemtest_revision"]) != p["gmemtest_revision"]:
            text += f", judged by the rules of {p['gmemtest_expected_revision']} (--revision)"
        return text

    @property
    def ran(self) -> bool:
        """Whether the boot ran its tests to the end: a verdict rests on this."""
        return self.ended is Ended.TESTS_RAN

    def count(self, *outcomes: Outcome) -> int:
        return sum(r.outcome in outcomes for r in self.results)

    @property
    def passed(self) -> int:
        return self.count(Outcome.PASSED)

    @property
    def failed(self) -> int:
        """Tests that did not pass: failures, timeouts and errors."""
        return self.count(Outcome.FAILED, Outcome.TIMEOUT, Outcome.ERROR)

    @property
    def skipped(self) -> int:
        return self.count(Outcome.SKIPPED)

    @property
    def xfailed(self) -> int:
        return self.count(Outcome.XFAILED)

    @property
    def failures(self) -> dict[str, str]:
        """Test id -> why, in short, for every test that did not pass."""
        return {r.name: short(r.message) for r in self.results if not r.outcome.ok}

    @property
    def skip_reasons(self) -> Counter[str]:
        return Counter(r.message for r in self.results if r.outcome is Outcome.SKIPPED)

    @property
    def tests(self) -> dict[str, Outcome]:
        return {r.name: r.outcome for r in self.results}

    @property
    def kernel_ran(self) -> int:
        """How many tests of the kernel (not of the harness) ran: passed, failed or xfailed."""
        return sum(r.name in self.kernel_tests and r.outcome is not Outcome.SKIPPED
                   for r in self.results)

    @property
    def unexpected_skips(self) -> list[TestResult]:
        """The skips this kind of boot may not have (gmemtest/results/expected_skips.toml);
        a kernel built elsewhere has no kind, and its skips are not judged."""
        if self.asked is None or self.asked.kind is BootKind.UNKNOWN:
            return []
        return skips.unexpected(self.asked.kind, self.results)

    @property
    def ok(self) -> bool:
        return self.ran and not self.findings and self.failed == 0 \
            and not self.unexpected_skips

    def verdict(self) -> str:
        if self.problem:
            return f"ERROR: {self.problem}"
        if self.crashes:
            c = self.crashes[0]
            return f"FAIL: the kernel crashed under {' and '.join(c.tests)}: {c.line}"
        if self.findings:
            return f"FAIL: kernel health: {self.findings[0]}"
        if self.failed:
            return f"FAIL: {self.failed} test(s) failed"
        if unexpected := self.unexpected_skips:
            assert self.asked is not None  # only a boot with a contract has unexpected skips
            return (f"FAIL: {len(unexpected)} skip(s) a boot ({self.asked.kind}) may not have, "
                    f"first {unexpected[0].name}: {short(unexpected[0].message)}")
        return "PASS"


def read_junit(path: Path) -> list[TestResult]:
    """Every testcase of a JUnit file as a result: failures and errors with their message,
    pytest-timeout's failures as timeouts, skips with their reason."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        failure, error, skipped = (case.find(t) for t in ("failure", "error", "skipped"))
        if failure is not None:
            message = failure.get("message", "")
            outcome = Outcome.TIMEOUT if "Timeout >" in message \
                or "outlived its timeout" in message else Outcome.FAILED
            results.append(TestResult(name, outcome, message))
        elif error is not None:
            results.append(TestResult(name, Outcome.ERROR, error.get("message", "")))
        elif skipped is not None:
            if skipped.get("type") == "pytest.xfail":
                results.append(TestResult(name, Outcome.XFAILED, skipped.get("message", "")))
            else:
                results.append(TestResult(name, Outcome.SKIPPED,
                                          _reason(skipped.get("message", ""))))
        else:
            results.append(TestResult(name, Outcome.PASSED))
    return results


def durations(path: Path) -> dict[str, float]:
    """Each test's seconds in a JUnit file, by pytest node id (tests/test_x.py::test_y[p])."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        out[f"{module}.py::{case.get('name', '')}"] = float(case.get("time") or 0)
    return out


def _reason(message: str) -> str:
    return message.removeprefix("Skipped: ").strip() or "(no reason given)"


def kmsg_findings(results: Path) -> list[health.Finding]:
    """Reports in the guest's per-test kernel log, each with every test running when it was
    logged (xdist workers each record every message; they are joined by sequence number)."""
    by_seq: dict[int, tuple[str, set[str]]] = {}
    for f in sorted(results.glob("kmsg-*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            msg, tests = by_seq.setdefault(rec["seq"], (rec["msg"], set()))
            tests.add(rec["test"])
    findings = []
    for _, (msg, tests) in sorted(by_seq.items()):
        kind = health.classify(msg)
        if kind:
            findings.append(health.Finding(kind, msg.strip(), tuple(sorted(tests))))
    return findings


def evaluate(label: str, run: Run) -> BootReport:
    """Judge one boot from its results directory and console log; a boot a kernel crash
    ended under a test is judged with the fresh boot that ran the rest (``run.after``)."""
    out = _evaluate(label, run)
    if run.crash is None:
        return out
    # The guest died before pytest wrote JUnit: what ran is in its progress record, and
    # each test the kernel crashed under failed.
    ran = progress.read(run.results)
    out.results = [TestResult(progress.junit_name(r.name), r.outcome, r.message)
                   for r in ran.done]
    out.results += [TestResult(progress.junit_name(t), Outcome.FAILED,
                               f"the kernel crashed: {run.crash.line}") for t in run.crash.tests]
    out.crashes = [run.crash]
    if run.after is None and not ran.left:
        out.ended, out.problem = Ended.TESTS_RAN, None  # it crashed under the last test
        return out
    if run.after is None:
        out.ended = Ended.KERNEL_CRASH
        out.problem = (f"the kernel crashed under {len(out.crashes)} test(s) and the tests "
                       f"after the last crash did not run (console log: {run.console})")
        return out
    rest = evaluate(label, run.after)
    out.results += rest.results
    out.findings += [f for f in rest.findings if f not in out.findings]
    out.tallies += rest.tallies
    out.crashes += rest.crashes
    out.kernel_tests |= rest.kernel_tests
    out.properties = out.properties or rest.properties
    out.ended, out.problem = rest.ended, rest.problem
    return out


def _evaluate(label: str, run: Run) -> BootReport:
    out = BootReport(label, run)
    if (run.results / contract.FILE).exists():
        try:
            out.asked = contract.read(run.results / contract.FILE)
        except GmemtestError as e:
            out.ended, out.problem = Ended.CONTRACT, str(e)
    junit = run.results / "junit.xml"
    unreadable = None
    if junit.exists():
        try:
            out.results = read_junit(junit)
            out.properties = {p.get("name", ""): p.get("value", "")
                              for p in ET.parse(junit).getroot().iter("property")}
        except ET.ParseError as e:
            unreadable = f"unreadable {junit}: {e}"
    out.findings = kmsg_findings(run.results)
    out.kernel_tests = progress.kernel_tests(run.results)
    for f in sorted(run.results.glob("reliability-*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                out.tallies.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    seen = {f.line for f in out.findings}
    console = run.console.read_text(errors="replace") if run.console.exists() else ""
    out.findings += [f for f in health.scan(console, console=True) if f.line not in seen]
    broken = run.results / contract.BROKEN
    if broken.exists():
        out.ended = Ended.CONTRACT
        out.problem = (f"not the kernel the boot asked for: "
                       f"{broken.read_text(errors='replace').strip()}")
    elif run.limit_hit:
        out.ended = run.limit or Ended.TIMEOUT
        out.problem = f"{run.limit_hit} (console log: {run.console})"
    elif run.crash is not None:
        pass  # judged by evaluate() from the progress record
    elif run.status is None and (fatal := progress.fatal_report(run.console)) is not None:
        out.ended = Ended.KERNEL_CRASH
        out.problem = f"the kernel crashed outside any test: {fatal} (console log: {run.console})"
    elif run.status is None:
        out.ended = Ended.NO_STATUS
        out.problem = f"the guest ended without a test status (console log: {run.console})"
    elif run.status > 128:
        out.ended = Ended.CRASHED
        out.problem = (f"pytest was killed by signal {run.status - 128} in the guest "
                       f"(console log: {run.console})")
    elif run.status not in (0, 1):
        out.ended = Ended.PYTEST
        why = pytest_error(console)
        out.problem = (f"pytest exited {run.status} in the guest"
                       + (f": {why}" if why else "") + f" (console log: {run.console})")
    elif not junit.exists():
        out.ended = Ended.PYTEST
        out.problem = f"pytest exited {run.status} but wrote no JUnit file {junit}"
    elif unreadable is not None:
        out.ended, out.problem = Ended.NO_RESULTS, unreadable
    return out


def pytest_error(console: str) -> str | None:
    """What pytest said of why it did not run the tests (a usage, collection or internal
    error), from the guest's console."""
    lines = [ln.strip().strip("!= ").strip() for ln in console.splitlines()]
    collecting = next((ln for ln in lines if ln.startswith("ERROR collecting")), None)
    for line in reversed(lines):
        if line.startswith(("E   ", "ERROR: ", "INTERNALERROR>")) or line.startswith(
                "no tests ran"):
            text = " ".join(line.removeprefix("E").split())
            return (f"{collecting}: {text}" if collecting else text)[:300]
    return collecting


def summary(outcomes: list[BootReport], timings: dict[str, float] | None = None) -> str:
    """The combined report: per boot, counts, verdict, skip reasons grouped, findings."""
    lines = []
    for o in outcomes:
        run = o.run or Run(Path("-"), Path("-"))
        boot = f"{run.boot_seconds:.1f} s" if run.boot_seconds is not None else "-"
        lines.append(f"== {o.label}: {o.passed} passed, {o.failed} failed, {o.skipped} skipped"
                     f", {o.xfailed} xfailed  [{run.accel}; boot {boot}, run "
                     f"{run.total_seconds:.0f} s"
                     + (f" in {len(run.segments())} boots" if run.after else "") + "]")
        lines.append(f"   {o.verdict()}")
        lines.append(f"   kernel tests run: {o.kernel_ran}"
                     + (f" ({o.asked.kind})" if o.asked is not None else ""))
        for crash in o.crashes:
            lines.append(f"   kernel crash under {', '.join(crash.tests)}: {crash.line}")
        for r in o.unexpected_skips[:20]:
            lines.append(f"   unexpected skip: {r.name}: {short(r.message)}")
        if o.revision():
            lines.append(f"   revision: {o.revision()}")
        for reason, n in o.skip_reasons.most_common():
            lines.append(f"   skip x{n}: {reason}")
        for name, why in list(o.failures.items())[:20]:
            lines.append(f"   failed: {name}" + (f": {why}" if why else ""))
        for t in o.tallies:
            counts = ", ".join(f"{k} {v}" for k, v in t.items() if k != "test")
            lines.append(f"   tally: {t.get('test')}: {counts}")
        for finding in o.findings[:10]:
            lines.append(f"   kernel: {finding}")
        lines.append(f"   results: {run.results}")
    if timings:
        lines.append("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return "\n".join(lines)


def not_run(outcomes: list[BootReport]) -> str | None:
    """One line naming the boots that did not run their tests (None when every boot did):
    no verdict rests on them."""
    bad = [o for o in outcomes if not o.ran]
    if not bad:
        return None
    return (f"{len(bad)} of {len(outcomes)} boot(s) did not run their tests: "
            + "; ".join(f"{o.label}: {o.problem or o.ended}" for o in bad))
