"""Reading a guest run's results: JUnit counts, skip reasons and kernel health findings."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import health
from .qemu import Run


@dataclass
class Outcome:
    """The verdict on one boot."""

    label: str
    run: Run
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # test id -> why, in short
    findings: list[health.Finding] = field(default_factory=list)
    problem: str | None = None
    tests: dict[str, str] = field(default_factory=dict)  # test id -> passed/failed/skipped/xfailed
    tallies: list[dict[str, object]] = field(default_factory=list)  # reliability tests' counts

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.failures and not self.findings \
            and self.failed == 0

    def verdict(self) -> str:
        if self.problem:
            return f"ERROR: {self.problem}"
        if self.findings:
            return f"FAIL: kernel health: {self.findings[0]}"
        if self.failed:
            return f"FAIL: {self.failed} test(s) failed"
        return "PASS"


def read_junit(path: Path, out: Outcome) -> None:
    """Count testcases by outcome; group skip reasons."""
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        skipped = case.find("skipped")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            out.failed += 1
            out.failures[name] = _why(failure.get("message", ""))
            out.tests[name] = "failed"
        elif skipped is not None:
            if skipped.get("type") == "pytest.xfail":
                out.xfailed += 1
                out.tests[name] = "xfailed"
            else:
                out.skipped += 1
                out.skip_reasons[_reason(skipped.get("message", ""))] += 1
                out.tests[name] = "skipped"
        else:
            out.passed += 1
            out.tests[name] = "passed"


def _why(message: str, width: int = 160) -> str:
    """A failure's first lines (the exception, the assertion), on one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()][:2]
    text = " / ".join(lines)
    return text if len(text) <= width else text[:width - 3] + "..."


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


def evaluate(label: str, run: Run) -> Outcome:
    """Judge one boot from its results directory and console log."""
    out = Outcome(label, run)
    junit = run.results / "junit.xml"
    if junit.exists():
        try:
            read_junit(junit, out)
        except ET.ParseError as e:
            out.problem = f"unreadable {junit}: {e}"
    out.findings = kmsg_findings(run.results)
    for f in sorted(run.results.glob("reliability-*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                out.tallies.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    seen = {f.line for f in out.findings}
    console = run.console.read_text(errors="replace") if run.console.exists() else ""
    out.findings += [f for f in health.scan(console, console=True) if f.line not in seen]
    if run.limit_hit:
        out.problem = f"{run.limit_hit} (console log: {run.console})"
    elif run.status is None:
        out.problem = f"the guest ended without a test status (console log: {run.console})"
    elif run.status not in (0, 1) and not out.problem:
        out.problem = f"pytest exited {run.status} in the guest (console log: {run.console})"
    return out


def summary(outcomes: list[Outcome], timings: dict[str, float] | None = None) -> str:
    """The combined report: per boot, counts, verdict, skip reasons grouped, findings."""
    lines = []
    for o in outcomes:
        boot = f"{o.run.boot_seconds:.1f} s" if o.run.boot_seconds is not None else "-"
        lines.append(f"== {o.label}: {o.passed} passed, {o.failed} failed, {o.skipped} skipped"
                     f", {o.xfailed} xfailed  [{o.run.accel}; boot {boot}, run "
                     f"{o.run.seconds:.0f} s]")
        lines.append(f"   {o.verdict()}")
        for reason, n in o.skip_reasons.most_common():
            lines.append(f"   skip x{n}: {reason}")
        for name, why in list(o.failures.items())[:20]:
            lines.append(f"   failed: {name}" + (f": {why}" if why else ""))
        for t in o.tallies:
            counts = ", ".join(f"{k} {v}" for k, v in t.items() if k != "test")
            lines.append(f"   tally: {t.get('test')}: {counts}")
        for finding in o.findings[:10]:
            lines.append(f"   kernel: {finding}")
        lines.append(f"   results: {o.run.results}")
    if timings:
        lines.append("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return "\n".join(lines)
