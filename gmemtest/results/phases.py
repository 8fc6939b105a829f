"""Where a boot's time goes before its first test: from QEMU's start to the first result, piece
by piece, from the host's clock (QEMU start to the init's banner), the init's and the job's
uptime lines on the console, and the guest plugin's phases.json (uptime at pytest's
configuration, collection start and end, first result)."""

from __future__ import annotations

import json
import re
from pathlib import Path

PIECES = ("QEMU, firmware and kernel decompression", "kernel boot and init mounts",
          "init to pytest", "Python start, pytest and plugins", "pytest configuration",
          "collection", "first test")


def pieces(results: Path, boot_seconds: float) -> dict[str, float] | None:
    """Seconds per piece (PIECES order) plus "to first test" (QEMU start to the first test's
    start) and "to first result"; None when the boot left no phases.json."""
    phases_file = results / "phases.json"
    console = (results / "console.log").read_text(errors="replace") \
        if (results / "console.log").exists() else ""
    init = re.search(r"gmemtest-init: start ([\d.]+)", console)
    job = re.search(r"gmemtest-guest: pytest starts ([\d.]+)", console)
    if not phases_file.exists() or not init or not job:
        return None
    p = json.loads(phases_file.read_text())
    if not {"collection_start", "collection_end", "first_result"} <= p.keys():
        return None
    u_init, u_job = float(init.group(1)), float(job.group(1))
    qemu = max(0.0, boot_seconds - u_init)
    steps = [qemu, u_init, u_job - u_init, p["pytest_configured"] - u_job,
             p["collection_start"] - p["pytest_configured"],
             p["collection_end"] - p["collection_start"],
             p["first_result"] - p["collection_end"]]
    out = {name: round(v, 2) for name, v in zip(PIECES, steps, strict=True)}
    out["to first test"] = round(qemu + p["collection_end"], 2)
    out["to first result"] = round(qemu + p["first_result"], 2)
    return out
