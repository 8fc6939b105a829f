"""The findings of tests/data/findings/, each replayed as its scenario on the kernel under test
(gmemtest.testing.model: after every step the kernel must agree with the model, and log no
report). The same scenario is what `gmemtest kselftest tests/test_findings.py::test_finding[NAME]`
sends upstream as a C selftest (docs/kselftest.md)."""

from pathlib import Path

import pytest

from gmemtest.testing import selftest_writer
from gmemtest.testing.model import Scenario

FINDINGS = sorted((Path(__file__).parent / "data/findings").glob("*.py"))


def _params():
    for path in FINDINGS:
        script = selftest_writer.read_script(path.read_text(), str(path))
        yield pytest.param(script, id=path.stem,
                           marks=[pytest.mark.needs(f"route:{script.route}")])


@pytest.mark.parametrize("script", list(_params()))
def test_finding(script, kvm):
    with Scenario.open(script.route, script.pages) as s:
        for step in script.steps:
            kw = {} if step.private is None else {"private": step.private}
            getattr(s, step.op)(*step.args, **kw)
        if not script.steps or script.steps[-1].op != "verify":
            s.verify()  # as its selftest ends: every page checked
        s.check_health()
