"""The main job: build the patched kernel, boot it with in-place conversion on and off, run the
whole suite in each, and print one combined report."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gmemtest.results import report, runlog
from gmemtest.vmtier import checkout, kernel, qemu
from gmemtest.vmtier.progress import Progress

SWITCH = "gmem_in_place_conversion"  # kvm's module parameter, from the series
PARAM = f"kvm.{SWITCH}"
MODES = (("in-place conversion on", f"{PARAM}=1"), ("in-place conversion off", f"{PARAM}=0"))
# A kernel without the series (vanilla 7.2, --no-patches) has no switch: one boot.
NO_SWITCH = (("no in-place conversion switch", ""),)


def results_root() -> Path:
    return checkout.RESULTS


def guest_env(build: kernel.Build) -> dict[str, str]:
    """What the in-guest suite needs to know about the kernel it runs on."""
    return {"GMEMTEST_KERNEL_HEADERS": str(build.headers)}


def switch_modes(src: Path) -> tuple[tuple[str, str], ...]:
    """The boots the main job makes of the tree at ``src``: on and off when KVM defines the
    in-place conversion switch, else one."""
    kvm_sources = (src / "virt" / "kvm").glob("*.c")
    if any(SWITCH in f.read_text(errors="replace") for f in kvm_sources):
        return MODES
    return NO_SWITCH


def run_modes(kimage: Path, pytest_args: list[str], env: dict[str, str], *,
              limits: qemu.Limits, progress: Progress, stamp: str,
              extra_cmdline: list[str] | None = None, image: Path | None = None,
              modes: tuple[tuple[str, str], ...] = MODES, at_once: int | None = None,
              root: Path | None = None) -> list[report.BootReport]:
    """Boot ``kimage`` once per mode and run the suite in each. Under single-threaded TCG on a
    machine with a core per boot the boots run side by side (each its own results directory;
    their output goes to their console logs, not the terminal). ``at_once``: how many boots
    side by side instead; ``root``: where the results directories go (results/)."""
    at_once = at_once or qemu.boots_at_once(len(modes))

    def boot(label: str, param: str) -> report.BootReport:
        name = param.replace('.', '_').replace('=', '-') or "no-switch"
        run = qemu.boot(kimage, pytest_args, results=(root or results_root()) / f"{stamp}-{name}",
                        cmdline=[p for p in (param, *(extra_cmdline or [])) if p],
                        limits=limits, env=env, image=image, echo=at_once == 1)
        return report.evaluate(label, run)

    if at_once == 1:
        outcomes = []
        for label, param in modes:
            progress.phase(f"suite ({label})",
                           f"booting {kimage.name} with {param or 'no switch'}")
            outcomes.append(boot(label, param))
        return outcomes
    progress.phase("suites", f"booting {kimage.name} {len(modes)} times side by side: "
                   + ", ".join(param or "no switch" for _, param in modes))
    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(lambda mode: boot(*mode), modes))


def main_job(*, src: Path | None = None, patches: bool | None = None,
             patch_dir: Path = checkout.KPATCHES,
             fragments: list[str] | None = None, pytest_args: list[str] | None = None,
             limits: qemu.Limits | None = None,
             image: Path | None = None) -> tuple[list[report.BootReport], str]:
    """Fetch and build the kernel, then the two boots; returns the outcomes and the report.
    The job's log goes to results/<stamp>-main-job.log (each boot logs into its own results
    directory too)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with runlog.attached(results_root() / f"{stamp}-main-job.log"):
        return _main_job(src, patches, patch_dir, fragments, pytest_args, limits, image, stamp)


def _main_job(src: Path | None, patches: bool | None, patch_dir: Path,
              fragments: list[str] | None, pytest_args: list[str] | None,
              limits: qemu.Limits | None, image: Path | None,
              stamp: str) -> tuple[list[report.BootReport], str]:
    progress = Progress()
    build = kernel.build(src, patches=patches, fragments=fragments, progress=progress,
                         patch_dir=patch_dir)
    timings = dict(progress.timings)  # fetch, extract, patch, config, build
    t0 = time.monotonic()
    outcomes = run_modes(build.bzimage, pytest_args or qemu.parallelism(), guest_env(build),
                         limits=limits or qemu.Limits(), progress=progress, stamp=stamp,
                         image=image, modes=switch_modes(build.source.path))
    timings["boots and suites, wall clock"] = time.monotonic() - t0
    for o in outcomes:
        if o.run is not None:
            timings[f"boot ({o.label})"] = o.run.boot_seconds or 0.0
            timings[f"suite ({o.label})"] = o.run.seconds
    text = f"{kernel.summary(build)}\n{report.summary(outcomes, timings)}"
    return outcomes, text
