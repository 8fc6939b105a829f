"""How much the model fuzzer runs (tests/test_model.py), read from the environment.

GMEMTEST_FUZZ picks a profile: ``short`` (CI: one round of 12 sequences of 30 steps) or ``long``
(nightly: rounds of 20 sequences of 80 steps, from seeds GMEMTEST_SEED, +1, +2..., started until
GMEMTEST_FUZZ_SECONDS, default 600, have passed). GMEMTEST_SEED (default 0) makes runs repeat.
"""

import os

PROFILES: dict[str, tuple[int, int, float | None]] = {  # sequences, steps, seconds
    "short": (12, 30, None),
    "long": (20, 80, float(os.environ.get("GMEMTEST_FUZZ_SECONDS", "600"))),
}
PROFILE = os.environ.get("GMEMTEST_FUZZ", "short")
SEED = int(os.environ.get("GMEMTEST_SEED", "0"))
if PROFILE not in PROFILES:
    raise ValueError(f"GMEMTEST_FUZZ={PROFILE}: expected one of {', '.join(PROFILES)}")


def timeout() -> float:
    """A per-test limit that fits the profile: the last round may start just before the end."""
    seconds = PROFILES[PROFILE][2]
    return 300.0 if seconds is None else 2 * seconds + 300.0
