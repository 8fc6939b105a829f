"""The suite's knobs: environment variables that reach the guest's pytest with the values set on
the host or in a matrix file's ``[env]``. Each value is checked where it comes in, so that a
typo is one line before a boot rather than a failure inside the guest."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gmemtest.errors import GmemtestError
from gmemtest.kvm.revision import REVISIONS

from . import ENV_CAP, ENV_REVISION


def _number(positive: bool) -> Callable[[str], bool]:
    def ok(value: str) -> bool:
        try:
            n = float(value)
        except ValueError:
            return False
        return n == n and n not in (float("inf"),) and (n > 0 if positive else True)
    return ok


def _whole(value: str) -> bool:
    try:
        int(value, 0)
    except ValueError:
        return False
    return True


# name -> (what it takes, the check)
TUNABLES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "GMEMTEST_FUZZ": ("short or long", lambda v: v in ("short", "long")),
    "GMEMTEST_FUZZ_SECONDS": ("a number of seconds above 0", _number(True)),
    "GMEMTEST_SEED": ("a whole number", _whole),
    "GMEMTEST_STRESS_SECONDS": ("a number of seconds above 0", _number(True)),
    ENV_CAP: ("a whole number (the capability's number)", _whole),
    ENV_REVISION: (" or ".join(REVISIONS), lambda v: v in REVISIONS),
}


def check(name: str, value: object, where: str) -> str:
    """``value`` of the knob ``name`` as the guest gets it (a string); one line when the knob
    is unknown or the value is not what it takes."""
    if name not in TUNABLES:
        raise GmemtestError(f"{where}: unknown variable {name} (expected "
                            f"{', '.join(TUNABLES)})")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise GmemtestError(f"{where}: {name} must be a string, got {type(value).__name__}")
    text = str(value)
    what, ok = TUNABLES[name]
    if not ok(text):
        raise GmemtestError(f"{where}: {name}={text!r}: expected {what}")
    return text


def from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The knobs set in ``environ``, checked."""
    return {k: check(k, environ[k], "environment") for k in TUNABLES if k in environ}
