"""The main job: build the kernel under test, boot it with in-place conversion on and off (once,
for a kernel without the switch), run the whole suite in each, and print one combined report."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gmemtest.kvm.revision import VM_ATTRIBUTES_OPTIONS as VM_ATTRIBUTES
from gmemtest.results import report, runlog
from gmemtest.testing import ENV_HARNESS
from gmemtest.vmtier import checkout, kconfig, kernel, qemu
from gmemtest.vmtier.kernelspec import KernelSpec
from gmemtest.vmtier.progress import Progress

PARAM = "kvm.gmem_in_place_conversion"


@dataclass(frozen=True)
class Mode:
    """One boot of the main job: what reports call it, and its kernel command line."""

    label: str
    cmdline: tuple[str, ...]
    slug: str  # in the results directory's name

    @property
    def switch(self) -> str | None:
        """"on" or "off" where the mode sets the switch on the command line."""
        value = dict(w.split("=", 1) for w in self.cmdline).get(PARAM)
        return None if value is None else "on" if value == "1" else "off"


ON = Mode("in-place conversion on", (f"{PARAM}=1",), "kvm_gmem_in_place_conversion-1")
OFF = Mode("in-place conversion off", (f"{PARAM}=0",), "kvm_gmem_in_place_conversion-0")
# The boot in the switch's default state leaves it alone, so that the suite checks the default
# too: off where KVM keeps per-VM memory attributes, on (v8) where it does not.
OFF_BY_DEFAULT = Mode("in-place conversion off (its default)", (),
                      "kvm_gmem_in_place_conversion-default")
ON_BY_DEFAULT = Mode("in-place conversion on (its default)", (),
                     "kvm_gmem_in_place_conversion-default")
# A kernel without the parameter boots once: vanilla 7.2, or the applied series without per-VM
# memory attributes, where in-place conversion is always on.
NO_SWITCH = Mode(f"no {PARAM}", (), "no-switch")


def counterpart(mode: Mode, build: kernel.Build) -> Mode:
    """The boot of ``build`` that stands for ``mode`` of another kernel: the same where
    ``build`` has the switch, else its one boot without it (a base before the series)."""
    if build.manifest is not None and not build.manifest.switch:
        return NO_SWITCH
    return mode


def results_root() -> Path:
    return checkout.RESULTS


def modes(build: kernel.Build) -> tuple[Mode, ...]:
    """The boots a kernel gets: on and off when it has the switch (or when it was built
    elsewhere and nobody can tell), else one. The boot in the switch's default state (off
    with per-VM memory attributes built in, on without) leaves the command line alone."""
    if build.manifest is None:
        return (ON, OFF)
    if not build.manifest.switch:
        return (NO_SWITCH,)
    config = kconfig.read_config(Path(build.manifest.config))
    if any(config.get(o) == "y" for o in VM_ATTRIBUTES):
        return (ON, OFF_BY_DEFAULT)
    return (ON_BY_DEFAULT, OFF)


def harness_boot(build: kernel.Build) -> tuple[Mode, ...]:
    """The harness's boot: the kernel's first mode, in-place conversion on where it has it."""
    return modes(build)[:1]


def run_modes(build: kernel.Build, pytest_args: list[str], *, limits: qemu.Limits,
              progress: Progress, stamp: str, env: dict[str, str] | None = None,
              extra_cmdline: list[str] | None = None, image: Path | None = None,
              boots: tuple[Mode, ...] | None = None, at_once: int | None = None,
              root: Path | None = None) -> list[report.BootReport]:
    """Boot ``build`` once per mode (``boots``, default :func:`modes`) and run the suite in
    each. Under single-threaded TCG on a machine with a core per boot the boots run side by
    side (each its own results directory; their output goes to their console logs, not the
    terminal). ``at_once``: how many boots side by side instead; ``root``: where the results
    directories go (results/)."""
    boots = boots or modes(build)
    at_once = at_once or qemu.boots_at_once(len(boots))

    def boot(mode: Mode) -> report.BootReport:
        run = qemu.boot(build, pytest_args,
                        results=(root or results_root()) / f"{stamp}-{mode.slug}",
                        cmdline=[*mode.cmdline, *(extra_cmdline or [])], limits=limits,
                        env=env, image=image, echo=at_once == 1)
        return report.evaluate(mode.label, run)

    if at_once == 1:
        outcomes = []
        for mode in boots:
            progress.phase(f"suite ({mode.label})",
                           f"booting {build.bzimage.name} with {' '.join(mode.cmdline) or '-'}")
            outcomes.append(boot(mode))
        return outcomes
    progress.phase("suites", f"booting {build.bzimage.name} {len(boots)} times side by side: "
                   + ", ".join(" ".join(m.cmdline) or m.label for m in boots))
    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(boot, boots))


def main_job(spec: KernelSpec, *, pytest_args: list[str] | None = None,
             limits: qemu.Limits | None = None, image: Path | None = None,
             harness: bool = False) -> tuple[list[report.BootReport], str]:
    """Build the kernel, then its boots; returns the outcomes and the report. The job's log
    goes to results/<stamp>-main-job.log (each boot logs into its own results directory).
    ``harness``: one boot, with in-place conversion on, running the harness's own tests."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with runlog.run_log(results_root() / f"{stamp}-main-job.log"):
        progress = Progress()
        build = kernel.resolve(spec, progress)
        timings = dict(progress.timings)  # fetch, extract, patch, config, build
        t0 = time.monotonic()
        outcomes = run_modes(build, pytest_args or qemu.parallelism(),
                             limits=limits or qemu.Limits(), progress=progress, stamp=stamp,
                             image=image, boots=harness_boot(build) if harness else None,
                             env={ENV_HARNESS: "1"} if harness else None)
        timings["boots and suites, wall clock"] = time.monotonic() - t0
        for o in outcomes:
            if o.run is not None:
                timings[f"boot ({o.label})"] = o.run.boot_seconds or 0.0
                timings[f"suite ({o.label})"] = o.run.total_seconds
        return outcomes, f"{kernel.summary(build)}\n{report.summary(outcomes, timings)}"
