"""Model-based conversion fuzzing: hypothesis drives random sequences of conversions, host and
guest accesses, hole punches, memslot delete/re-add and pre-faults on a real VM, and after each
step the kernel must agree with gmemtest.testing.model's reference model and log no kernel report.

Profiles (tests/fuzz_profile.py, GMEMTEST_FUZZ): ``short`` (default, CI) and ``long`` (nightly,
time-bounded). Runs are reproducible: the seed is fixed (GMEMTEST_SEED, default 0). A failure
writes the minimal sequence hypothesis found as a standalone script (see the test's failure
message) that replays it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import fuzz_profile
import pytest

from gmemtest.kvm import uapi
from gmemtest.testing import faultinject, gup
from gmemtest.testing.model import Scenario


def results_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("GMEMTEST_RESULTS", tmp_path))


@pytest.mark.timeout(fuzz_profile.timeout())
def test_kernel_agrees_with_the_model(route, kvm, tally, tmp_path):
    """Seed 'Advantage 1' (guest_memfd as the single source of truth) and the contract's
    'Conversion' rules, as a state machine: SIGBUS exactly on private pages converted in place,
    contents surviving conversions and memslot re-adds, punches zeroing guest_memfd only,
    the exit kind of an access without a memslot, and no kernel report. Contract 'Errors' as
    steps whose outcome the model predicts: a pinned page makes a conversion that would
    change it EAGAIN at that page; an injected slab failure makes one ENOMEM at its start;
    either changes nothing, and a conversion that changes nothing cannot fail."""
    from model_machine import fuzz

    examples, steps, seconds = fuzz_profile.PROFILES[fuzz_profile.PROFILE]
    route.vm.close()  # each example makes its own VM
    pre_fault_ok = bool(kvm.check_extension(uapi.KVM_CAP_PRE_FAULT_MEMORY))
    # Pins and injected failures join the steps where the kernel offers them; the tally
    # says which did (pins need a host view of guest_memfd: the gmem route).
    pin_ok = route.name == "gmem" and gup.missing() is None
    failslab_ok = faultinject.missing("failslab") is None
    totals: Counter[str] = Counter()
    try:
        _, totals = fuzz(route.name, pre_fault_ok, results_dir(tmp_path), examples=examples,
                         steps=steps, seconds=seconds, pin_ok=pin_ok, failslab_ok=failslab_ok)
    finally:
        tally(profile=fuzz_profile.PROFILE, seed=fuzz_profile.SEED, **totals)
    assert totals["conversions"] > 0, totals
    assert totals["verifications"] > 0, totals
    assert not pin_ok or totals["refused_pinned"] > 0, totals
    # Conversions that an injected failure made fail, not conversions with failslab armed.
    assert not failslab_ok or totals["failed_conversions"] > 0, totals


class ForgetsGuestWrites(Scenario):
    """A wrong model: it believes guest writes change nothing."""

    def guest_write(self, page: int, value: int) -> None:
        saved = (self.pages[page].shared, self.pages[page].private_data)
        super().guest_write(page, value)
        self.pages[page].shared, self.pages[page].private_data = saved


@pytest.mark.harness
def test_disagreement_gives_a_minimal_standalone_reproducer(route, kvm, tmp_path):
    """Against a model that is wrong about guest writes, the fuzzer must find a disagreement,
    shrink it to a few steps, and write a script that fails the same way on its own."""
    from model_machine import fuzz

    route.vm.close()
    with pytest.raises(AssertionError) as e:
        fuzz(route.name, False, tmp_path, examples=50, steps=10, scenario=ForgetsGuestWrites)
    script = tmp_path / f"model-reproducer-{route.name}.py"
    assert "minimal reproducer" in "".join(getattr(e.value, "__notes__", []))
    text = script.read_text()
    steps = [ln for ln in text.splitlines() if ln.startswith("    s.")
             and ln.strip() not in ("s.verify()", "s.check_health()")]
    assert any(".guest_write(" in ln for ln in steps), text
    assert len(steps) <= 2, text
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Disagreement" in proc.stderr, proc.stdout + proc.stderr
