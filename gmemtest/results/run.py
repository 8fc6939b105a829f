"""The record of one boot of the kernel under test: where its files are and what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    """One boot: its results directory and console log, pytest's exit status in the guest
    (None when the guest never reported one), the accelerator, times, and the runner's limit
    that ended it, if any."""

    results: Path
    console: Path
    status: int | None = None
    accel: str = ""
    boot_seconds: float | None = None
    seconds: float = 0.0
    limit_hit: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
