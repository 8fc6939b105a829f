"""The hypothesis state machine behind tests/test_model.py, in a module of its own so that
collecting the suite does not import hypothesis (seconds per process under TCG)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

from fuzz_profile import PROFILE, SEED
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    get_state_machine_test,
    invariant,
    precondition,
    rule,
)

from gmemtest.testing.model import PAGES, Scenario
from gmemtest.testing.selftest_writer import HARNESS_ONLY

VERIFY_EVERY = 6
# Sequences a fuzzing run keeps, per route: the first examples of at least SEQUENCE_KINDS kinds
# of step, conversions among them, that need nothing beyond a KVM selftest (no pins, no
# injected failures), written as model-sequence-ROUTE-N.py for `gmemtest kselftest`.
KEEP_SEQUENCES = 2
SEQUENCE_KINDS = 5
FAILSLAB_SPACE = [0, 64, 512, 4096]  # bytes of slab allocations let through before a failure

page = st.integers(0, PAGES - 1)
count = st.integers(1, 3)
byte = st.integers(1, 255)


class Conversions(RuleBasedStateMachine):
    route_name: ClassVar[str] = ""
    pre_fault_ok: ClassVar[bool] = False
    pin_ok: ClassVar[bool] = False
    failslab_ok: ClassVar[bool] = False
    scenario: ClassVar[type[Scenario]] = Scenario
    scenarios: ClassVar[list[Scenario]] = []  # one, reset for each example
    out: ClassVar[Path | None] = None
    kept: ClassVar[list[Path]] = []

    def __init__(self) -> None:
        super().__init__()
        if self.scenarios:
            self.keep(self.scenarios[0])
            self.scenarios[0].reset()
        else:
            self.scenarios.append(self.scenario.open(self.route_name))
        self.s = self.scenarios[0]

    def keep(self, done: Scenario) -> None:
        """Write the example ``done`` ran as a sequence a selftest can replay, while fewer than
        KEEP_SEQUENCES are kept."""
        harness = tuple(f"s.{op}(" for op in HARNESS_ONLY if HARNESS_ONLY[op])
        kinds = {line.split("(", 1)[0] for line in done.log}
        if self.out is None or len(self.kept) >= KEEP_SEQUENCES \
                or len(kinds) < SEQUENCE_KINDS or "s.convert" not in kinds \
                or any(line.startswith(harness) for line in done.log):
            return
        path = self.out / f"model-sequence-{self.route_name}-{len(self.kept) + 1}.py"
        path.write_text(done.reproducer(f"A sequence of the fuzzer (seed {SEED}, profile "
                                        f"{PROFILE}) that the kernel agreed with."))
        self.kept.append(path)

    @rule(first=page, n=count)
    def to_private(self, first: int, n: int) -> None:
        self.s.convert(first, min(n, PAGES - first), private=True)

    @rule(first=page, n=count)
    def to_shared(self, first: int, n: int) -> None:
        self.s.convert(first, min(n, PAGES - first), private=False)

    @precondition(lambda self: self.failslab_ok and self.s.pin_held is None)
    @rule(first=page, n=count, private=st.booleans(), space=st.sampled_from(FAILSLAB_SPACE))
    def convert_failing(self, first: int, n: int, private: bool, space: int) -> None:
        self.s.convert_failing(first, min(n, PAGES - first), private=private, space=space)

    @precondition(lambda self: self.pin_ok and self.s.pin_held is None)
    @rule(p=page)
    def pin(self, p: int) -> None:
        if not self.s.pages[p].private:  # only a shared page can be pinned
            self.s.pin(p)

    @precondition(lambda self: self.s.model.pinned is not None)
    @rule(before=st.integers(0, 2), n=count)
    def to_private_over_pin(self, before: int, n: int) -> None:
        """A conversion to private that covers the pinned page."""
        assert self.s.model.pinned is not None
        first = max(0, self.s.model.pinned - before)
        self.s.convert(first, min(max(n, self.s.model.pinned - first + 1), PAGES - first),
                       private=True)

    @precondition(lambda self: self.s.pin_held is not None)
    @rule()
    def unpin(self) -> None:
        self.s.unpin()

    @rule(p=page, value=byte)
    def host_write(self, p: int, value: int) -> None:
        self.s.host_write(p, value)

    @rule(p=page)
    def host_read(self, p: int) -> None:
        self.s.host_read(p)

    @rule(p=page, value=byte)
    def guest_write(self, p: int, value: int) -> None:
        self.s.guest_write(p, value)

    @rule(p=page)
    def guest_read(self, p: int) -> None:
        self.s.guest_read(p)

    @rule(first=page, n=count)
    def punch(self, first: int, n: int) -> None:
        self.s.punch(first, min(n, PAGES - first))

    @precondition(lambda self: self.pre_fault_ok)
    @rule(first=page, n=count)
    def pre_fault(self, first: int, n: int) -> None:
        self.s.pre_fault(first, min(n, PAGES - first))

    @rule(p=page)
    def memslot_cycle(self, p: int) -> None:
        self.s.memslot_cycle(p)

    @invariant()
    def agrees(self) -> None:
        """No kernel report after any step; every page checked every VERIFY_EVERY steps."""
        self.s.check_health()
        if len(self.s.log) % VERIFY_EVERY == VERIFY_EVERY - 1:
            self.s.verify()


def fuzz(route_name: str, pre_fault_ok: bool, out: Path, *, examples: int, steps: int,
         seconds: float | None = None, scenario: type[Scenario] = Scenario,
         pin_ok: bool = False, failslab_ok: bool = False,
         ) -> tuple[type[Conversions], Counter[str]]:
    """Run the state machine: ``examples`` sequences of ``steps`` steps from seed SEED, and,
    given ``seconds``, further rounds from seeds SEED+1, SEED+2... until that time is spent. On
    a disagreement write the minimal sequence to out/model-reproducer-PATH.py and name it in
    the error."""
    machine = type(f"Conversions_{route_name.replace('-', '_')}", (Conversions,), {
        "route_name": route_name, "scenarios": [], "scenario": scenario, "out": out,
        "kept": [],
        "pre_fault_ok": pre_fault_ok, "pin_ok": pin_ok, "failslab_ok": failslab_ok})
    test = get_state_machine_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        print_blob=False, suppress_health_check=list(HealthCheck)))
    deadline = time.monotonic() + (seconds or 0)
    totals: Counter[str] = Counter()
    round_seed = SEED
    try:
        while True:
            seed(round_seed)(test)()
            totals["rounds"] += 1
            if time.monotonic() >= deadline:
                break
            round_seed += 1
    except AssertionError as e:
        last = machine.scenarios[0]  # hypothesis replays the minimal sequence last
        script = out / f"model-reproducer-{route_name}.py"
        script.write_text(last.reproducer(f"Seed {round_seed}, profile {PROFILE}: {e}"))
        e.add_note(f"minimal reproducer ({len(last.log)} steps, seed {round_seed}): {script}")
        raise
    finally:
        totals.update(machine.scenarios[0].counts if machine.scenarios else {})
        totals["examples"] += 1 if machine.scenarios else 0  # the first one opens, not resets
        for sc in machine.scenarios:
            sc.close()
    return machine, totals
