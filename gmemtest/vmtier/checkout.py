"""Where this checkout keeps what the VM tier uses besides the package: kernel patches, kconfig
fragments, the guest's init and programs, and the results of runs."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
KPATCHES = CHECKOUT / "kpatches"
KCONFIGS = CHECKOUT / "kconfigs"
VMIMAGES = CHECKOUT / "vmimages"
INIT = VMIMAGES / "init"
RESULTS = CHECKOUT / "results"
