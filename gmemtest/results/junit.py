"""The one JUnit writer for gmemtest's own records (a matrix's cells, a series walk's builds):
testsuites of testcases, each suite's counts taken from its cases, written indented."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One testcase: ``failure`` (a test that failed) or ``error`` (one that could not run)
    with its one-line message and the text under it; ``time`` in seconds."""

    classname: str
    name: str
    failure: str | None = None
    error: str | None = None
    text: str = ""
    time: float | None = None

    def element(self) -> ET.Element:
        case = ET.Element("testcase", classname=self.classname, name=self.name)
        if self.time is not None:
            case.set("time", f"{self.time:.1f}")
        for tag, message in (("failure", self.failure), ("error", self.error)):
            if message is not None:
                ET.SubElement(case, tag, message=message).text = self.text or None
        return case


def suite(name: str, cases: Iterable[Case | ET.Element]) -> ET.Element:
    """A testsuite of ``cases`` (gmemtest's, or testcases read from a boot's JUnit), with
    tests, failures, errors and skipped counted."""
    s = ET.Element("testsuite", name=name)
    for c in cases:
        s.append(c.element() if isinstance(c, Case) else c)
    found = s.findall("testcase")
    s.set("tests", str(len(found)))
    for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        s.set(attr, str(sum(c.find(tag) is not None for c in found)))
    return s


def write(name: str, suites: Iterable[ET.Element], path: Path) -> None:
    """junit.xml at ``path``: the ``suites`` under one testsuites element called ``name``."""
    root = ET.Element("testsuites", name=name)
    root.extend(suites)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
