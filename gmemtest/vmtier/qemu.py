"""Booting a kernel under QEMU and running this checkout's pytest inside it.

The guest's root is the host's root over virtio-9p, read-only (or a vmimages/ root image), so the
guest runs the host's Python, this checkout and its venv at the same paths. A second 9p share is
the writable results directory: the host writes job.sh there, the guest writes JUnit XML, KTAP,
its kernel log per test and its exit status. QEMU is always reaped, and dies with a runner
that is killed outright.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gmemtest.errors import GmemtestError
from gmemtest.kvm import revision as rev
from gmemtest.results import contract, health, progress, runlog
from gmemtest.results.run import Ended, Run
from gmemtest.testing import ENV_HEADERS, GUEST_PYTEST_PLUGINS, TEST_LIMITS, kselftest, tunables

from . import host, kconfig, pycache
from .checkout import CHECKOUT, INIT
from .kernel import Build

BANNER = "gmemtest-init: start"
HEARTBEAT = re.compile(r"gmemtest-init: alive [\d.]+\r?\n")  # kept in the log, not echoed
HIDDEN = (Path("/tmp"), Path("/run"))  # the guest init mounts tmpfs over these
TCG_CPU = "EPYC,+svm,+npt"
log = logging.getLogger(__name__)


@dataclass
class Accel:
    args: list[str]
    label: str
    parallel: bool  # the guest's vCPUs run on host threads of their own
    cmdline: tuple[str, ...] = ()  # what the guest kernel needs to know about the accelerator


def parallelism(accel: Accel | None = None) -> list[str]:
    """The guest pytest's default: xdist workers where the vCPUs run in parallel, one process
    where they share a host thread (single-threaded TCG): there workers only add their start-up
    (measured here, the whole suite: 41 to 43 s serially, 53 to 57 s with -n auto)."""
    accel = accel or choose_accel()
    return ["-n", "auto"] if accel.parallel else ["-p", "no:xdist"]


def boots_at_once(boots: int, accel: Accel | None = None) -> int:
    """How many of ``boots`` to run side by side: each single-threaded TCG guest keeps one host
    core busy, so as many as there are cores; one at a time where a guest's vCPUs already use
    every core (KVM, multi-threaded TCG). $GMEMTEST_SERIAL_BOOTS=1 makes them serial."""
    accel = accel or choose_accel()
    if accel.parallel or os.environ.get("GMEMTEST_SERIAL_BOOTS") == "1":
        return 1
    return max(1, min(boots, os.cpu_count() or 1))


def choose_accel() -> Accel:
    """KVM with -cpu host only when the host can run nested guests (vmx/svm and the vendor
    module's nested=1); otherwise TCG with an EPYC model that has SVM and NPT, single-threaded:
    with one host thread per vCPU, QEMU 7.2 sometimes walks a nested guest's page tables wrong
    while L1 rewrites nested page tables (docs/tcg-nested.md). $GMEMTEST_TCG_THREAD=multi
    brings those threads back."""
    nested = host.nested_support()
    if nested["can_run_nested"] and os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel(["-accel", "kvm", "-cpu", "host"], "kvm (nested)", parallel=True)
    why = "no vmx/svm" if not nested["cpu_virt"] else f"{nested['module']} nested off"
    thread = os.environ.get("GMEMTEST_TCG_THREAD", "single")
    if thread not in ("single", "multi"):
        raise GmemtestError(f"GMEMTEST_TCG_THREAD={thread}: single or multi")
    khz = host.tsc_khz()
    return Accel(["-accel", f"tcg,thread={thread}", "-cpu", TCG_CPU],
                 f"tcg{'' if thread == 'single' else ' multi-threaded'} ({why})",
                 parallel=thread == "multi",
                 cmdline=(f"tsc_early_khz={khz}",) if khz else ())


@dataclass
class Limits:
    boot: float = 60.0  # seconds from QEMU start to the init banner
    test: float = 300.0  # per test, enforced in the guest by pytest-timeout
    total: float = 1800.0  # the whole run
    silence: float = 150.0  # seconds without a console line (the init's heartbeat is 30 s)
    # A limit of its own for some tests (node id -> seconds), in place of ``test``: the guest's
    # plugin reads it from TEST_LIMITS in the results share and marks each test with it.
    tests: dict[str, float] = field(default_factory=dict)


# On a silent guest the runner injects an NMI (QEMU's monitor): with these the kernel panics on
# it and prints every task's stack and every CPU's backtrace to the console before QEMU exits.
HANG_DUMP_CMDLINE = ["unknown_nmi_panic", "panic_sys_info=tasks,all_bt"]
# Seconds a boot that stops at the kernel's first report goes on: the rest of the report (its
# registers and call trace) reaches the console.
REPORT_TAIL = 5.0
# Fresh boots after kernel crashes under tests, at most, before the rest is left not run.
MAX_CRASHES = 3


def job_script(pytest_args: list[str], results_mount: str, env: dict[str, str],
               python: str = sys.executable, checkout: Path = CHECKOUT) -> str:
    """The guest's job: this checkout's pytest, with this venv, writing results to the share."""
    # pytest loads only the plugins the guest uses (GUEST_PYTEST_PLUGINS; xdist where -n asks).
    exports = {"PYTHONPYCACHEPREFIX": "/tmp/pycache", "HOME": "/tmp",
               "GMEMTEST_CACHE": "/tmp/gmemtest-cache", "GMEMTEST_RESULTS": results_mount,
               "GMEMTEST_IN_GUEST": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **env}
    lines = ["#!/bin/sh", f"cd {shlex.quote(str(checkout))} || exit 125"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    plugins = [*GUEST_PYTEST_PLUGINS, "-p", "gmemtest.testing.guest_writer"]
    if "-n" in pytest_args or any(a.startswith("--numprocesses") for a in pytest_args):
        plugins += ["-p", "xdist.plugin"]
    cmd = [python, "-m", "pytest", *plugins, f"--junitxml={results_mount}/junit.xml",
           *pytest_args]
    lines.append("read -r uptime _ < /proc/uptime")
    lines.append("echo 'gmemtest-guest: pytest starts' $uptime")
    lines.append(" ".join(shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"


def hidden_paths(paths: list[Path]) -> list[Path]:
    """The existing host paths among ``paths`` that the guest's tmpfs mounts would hide."""
    out: list[Path] = []
    for p in paths:
        p = p.resolve()
        if p.exists() and any(p.is_relative_to(h) for h in HIDDEN) \
                and not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


@dataclass(frozen=True)
class Machine:
    """The QEMU machine a kernel boots on, and how its 9p shares attach."""

    args: tuple[str, ...]
    nine_p: str  # the virtio-9p device model
    label: str
    cmdline: tuple[str, ...] = ()  # what the kernel needs to know about the machine


# No firmware beyond qboot, no PCI, no ACPI: QEMU hands the kernel an MP table for the vCPUs and
# names the virtio-mmio devices on its command line. What the lean kernel (kconfigs/base) is for.
# The init's reboot ends QEMU (-no-reboot) only as a triple fault: microvm has no keyboard
# controller or ACPI reset register for the kernel's other ways to reset. Its missing NMI
# status port reads 0xff, so the kernel takes the hang dump's NMI for a PCI SERR, not an
# unknown NMI: the sysctl makes that panic too.
MICROVM = Machine(("-machine", "microvm,acpi=off,pcie=off,x-option-roms=off"),
                  "virtio-9p-device", "microvm",
                  ("reboot=t", "sysctl.kernel.panic_on_unrecovered_nmi=1"))
# A PC with SeaBIOS, ACPI and virtio-pci: for a kernel without virtio-mmio.
Q35 = Machine(("-machine", "q35"), "virtio-9p-pci", "q35")


def machine_for(config: Path | None) -> Machine:
    """microvm when the kernel's build configuration has built-in virtio-mmio with
    command-line devices; q35 otherwise (and for a kernel built elsewhere)."""
    if config is not None and config.is_file():
        text = config.read_text(errors="replace")
        if all(f"\n{o}=y\n" in text for o in ("CONFIG_VIRTIO_MMIO",
                                                "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES")):
            return MICROVM
    return Q35


def kernel_cmdline(cmdline: list[str], *, accel: Accel, init: Path = INIT,
                   machine: Machine = Q35) -> list[str]:
    """The guest kernel's whole command line: the runner's words, then ``cmdline``."""
    return ["console=ttyS0", "loglevel=5", "panic=-1", "root=hostroot", "rootfstype=9p",
            "rootflags=trans=virtio,version=9p2000.L,msize=524288,cache=loose", "ro",
            f"init={init}", *HANG_DUMP_CMDLINE, *machine.cmdline, *accel.cmdline, *cmdline]


def contract_of(build: Build, cmdline: list[str]) -> contract.Contract:
    """What a boot of ``build`` with the whole kernel command line ``cmdline`` must show the
    guest: the parameters taking, and what the build's configuration promises."""
    config = build.config
    cap = None
    if build.headers is not None and (header := rev.kvm_header(build.headers)) is not None:
        cap = rev.define_in(header, rev.CAP_NAME)
    promised = contract.promise(
        kconfig.read_config(config) if config is not None and config.is_file() else None,
        switch=build.manifest.switch if build.manifest is not None else None, cap=cap,
        cmdline=cmdline)
    if build.kselftests is None:
        return promised
    return replace(promised, promises=(*promised.promises, contract.Promise(
        "kselftests", "the kernel's build made its tree's guest_memfd selftests")))


def qemu_command(kernel: Path, results: Path, accel: Accel, cmdline: list[str], *,
                 root: Path = Path("/"), init: Path = INIT, memory: str = "3G",
                 smp: int = 2, monitor: Path | None = None,
                 machine: Machine = Q35) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise GmemtestError("qemu-system-x86_64 not found: apt-get install qemu-system-x86 "
                            "(or run scripts/bootstrap --vm)")
    append = kernel_cmdline(cmdline, accel=accel, init=init, machine=machine)
    shares = [("root", f"{root}", ",readonly=on,multidevs=remap", "hostroot"),
              ("results", f"{results}", "", "results"),
              ("pycache", str(pycache.prefix()), "", "pycache")]
    devices = []
    for fsid, path, extra, tag in shares:
        devices += ["-fsdev", f"local,id={fsid},path={path},security_model=none{extra}",
                    "-device", f"{machine.nine_p},fsdev={fsid},mount_tag={tag}"]
    return [qemu, *machine.args, *accel.args, "-smp", str(smp), "-m", memory,
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-monitor",
            f"unix:{monitor},server=on,wait=off" if monitor else "none",
            "-kernel", str(kernel), "-append", " ".join(append), *devices]


def boot(build: Build, pytest_args: list[str], *, results: Path,
         cmdline: list[str] | None = None, limits: Limits | None = None,
         env: dict[str, str] | None = None, image: Path | None = None, echo: bool = True,
         memory: str = "3G", stop: threading.Event | None = None,
         stop_at_report: bool = False) -> Run:
    """Boot the kernel of ``build``, run pytest with ``pytest_args`` in it, and return when
    QEMU is gone. The guest's pytest learns the kernel's uapi headers from the build. The
    guest's root is the host's, or ``image`` (a vmimages root directory). The boot's log is
    ``gmemtest.log`` in ``results``. ``stop``: when it is set, QEMU is stopped (the run ends
    STOPPED). ``stop_at_report``: QEMU is stopped REPORT_TAIL seconds after the kernel starts a
    report (an Oops, a BUG, a WARN...) on the console (KERNEL_REPORT): for a caller to whom
    the report is the verdict, the tests after it are time lost."""
    results.mkdir(parents=True, exist_ok=True)
    (results / progress.DONE).unlink(missing_ok=True)
    listing = build.kselftests
    env = {**({ENV_HEADERS: str(build.headers)} if build.headers else {}),
           **({kselftest.ENV: str(listing.root)} if listing is not None else {}), **(env or {})}

    def one(where: Path) -> Run:
        run = _boot(BootRequest(
            build.bzimage, machine_for(build.config), tuple(pytest_args), where,
            tuple(cmdline or ()), limits or Limits(), env, image, echo=echo, memory=memory,
            stop=stop, stop_at_report=stop_at_report,
            promises=lambda words: contract_of(build, words)))
        log.info("boot of %s ended: status %s, %s, boot %.1f s, run %.1f s", build.bzimage,
                 run.status, run.limit_hit or "no limit hit", run.boot_seconds or -1,
                 run.seconds)
        return run

    with runlog.attached(results / "gmemtest.log"):
        first = tail = one(results)
        done: list[str] = []
        # A kernel crash under a test costs that test, not the rest: they run in a fresh boot
        # (unless the caller takes the kernel's first report as its verdict).
        for n in range(1, MAX_CRASHES + 1):
            crash = None if stop_at_report else progress.crash_of(tail)
            if crash is None:
                break
            tail.crash = crash
            ran = progress.read(tail.results)
            if not ran.left:
                break  # the crash came under the last test
            done += [r.name for r in ran.done] + list(crash.tests)
            log.info("the kernel crashed under %s (%s): the rest in a fresh boot",
                     ", ".join(crash.tests), crash.line)
            rest = results / f"after-crash-{n}"
            rest.mkdir(exist_ok=True)
            (rest / progress.DONE).write_text("".join(f"{t}\n" for t in done))
            tail.after = tail = one(rest)
        return first


@dataclass(frozen=True)
class BootRequest:
    """One boot, all it needs: the kernel and the machine to boot it on, pytest's arguments,
    where its results go, the kernel's command line, its limits, the environment of the
    guest's pytest, the root image (None: the host's root). ``echo``: the guest's output on
    the terminal; ``stop``: set, it stops QEMU; ``stop_at_report``: QEMU is stopped
    REPORT_TAIL seconds after the kernel's first report; ``promises``: what the boot promises
    to test, from the command line it was given (gmemtest.results.contract)."""

    kernel: Path
    machine: Machine
    pytest_args: tuple[str, ...]
    results: Path
    cmdline: tuple[str, ...]
    limits: Limits
    env: dict[str, str]
    image: Path | None = None
    echo: bool = True
    memory: str = "3G"
    stop: threading.Event | None = None
    stop_at_report: bool = False
    promises: Callable[[list[str]], contract.Contract] | None = None


class Console:
    """QEMU's serial console, read by a thread of its own: kept in console.log, echoed (the
    guest's lines, not the kernel's), and watched for the init's banner, the time of the last
    line, and the kernel's first report."""

    def __init__(self, proc: subprocess.Popen[bytes], run: Run, start: float, *,
                 echo: bool, watch_reports: bool) -> None:
        self.proc, self.run, self.start = proc, run, start
        self.echo, self.watch_reports = echo, watch_reports
        self.banner = threading.Event()
        self.last_line = start
        self.report_at: float | None = None  # when the kernel's first report began
        self.thread = threading.Thread(target=self._pump, daemon=True)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with open(self.run.console, "wb") as kept:
            for raw in self.proc.stdout:
                self.last_line = time.monotonic()
                kept.write(raw)
                kept.flush()
                line = raw.decode(errors="replace")
                if not self.banner.is_set() and BANNER in line:
                    self.run.boot_seconds = time.monotonic() - self.start
                    self.banner.set()
                elif self.banner.is_set() and self.echo and not line.startswith("["):
                    sys.stdout.write(HEARTBEAT.sub("", line).replace("\r", ""))
                    sys.stdout.flush()
                if self.watch_reports and self.report_at is None \
                        and health.scan(line, console=True):
                    self.report_at = time.monotonic()


def _watch(req: BootRequest, console: Console, monitor: Path) -> tuple[Ended, str] | None:
    """Wait for QEMU to end; the limit that ended it first instead, and how it is said."""
    limits, proc = req.limits, console.proc
    while proc.poll() is None:
        now = time.monotonic()
        elapsed = now - console.start
        if not console.banner.is_set() and elapsed > limits.boot:
            return Ended.BOOT_TIMEOUT, f"boot timeout: no init banner within {limits.boot:.0f} s"
        if req.stop is not None and req.stop.is_set():
            return Ended.STOPPED, "stopped: another boot decided"
        if console.report_at is not None and now - console.report_at > REPORT_TAIL:
            return Ended.KERNEL_REPORT, \
                f"stopped {REPORT_TAIL:.0f} s after the kernel's first report"
        if elapsed > limits.total:
            return Ended.TIMEOUT, f"overall timeout: the run exceeded {limits.total:.0f} s"
        if console.banner.is_set() and now - console.last_line > limits.silence:
            dumped = _dump_hung_guest(proc, monitor)
            return Ended.HANG, (f"hang: the guest printed nothing for {limits.silence:.0f} s, "
                                "not even the init's heartbeat; " + (
                                    "an NMI made its kernel print every task's stack"
                                    if dumped else "it did not answer an NMI either"))
        time.sleep(0.1)
    return None


def _boot(req: BootRequest) -> Run:
    results, limits, env, image = req.results, req.limits, req.env, req.image
    for name in ("status", "junit.xml", "results.ktap", TEST_LIMITS, contract.FILE,
                 contract.BROKEN, progress.FILE):
        (results / name).unlink(missing_ok=True)
    for stale in [*results.glob("kmsg-*.jsonl"), *results.glob("reliability-*.jsonl"),
                  *results.glob(f"{progress.COLLECTED}-*.txt")]:
        stale.unlink()
    color = "yes" if req.echo and sys.stdout.isatty() else "no"
    args = [f"--color={color}", *req.pytest_args, f"--timeout={int(limits.test)}"]
    env = {**tunables.from_environ(os.environ), **env}
    # Paths as the guest can follow them: through a link under /tmp (a cache there) it could
    # not, the init's tmpfs hides the link; the path it resolves to is bound (hidden_paths).
    env = {k: str(Path(v).resolve()) if v.startswith("/") and Path(v).exists() else v
           for k, v in env.items()}
    if image is None:
        root, checkout, python = Path("/"), CHECKOUT, sys.executable
        pycache.fill_once(checkout)  # a first boot as warm as the next
    else:
        from . import vmimage

        vmimage.sync_checkout(image)
        root, checkout, python = image, vmimage.SRC, str(vmimage.VENV / "bin/python")
        if ENV_HEADERS in env:
            # The image cannot see the host's cache: ship the headers in the results share.
            shutil.copytree(env[ENV_HEADERS], results / "headers", symlinks=True,
                            dirs_exist_ok=True)
            env[ENV_HEADERS] = "/tmp/results/headers"
    if limits.tests:
        (results / TEST_LIMITS).write_text(json.dumps(limits.tests, indent=1) + "\n")
    accel = choose_accel()
    (results / "job.sh").write_text(job_script(args, "/tmp/results", env, python, checkout))
    binds = hidden_paths([checkout, Path(sys.prefix),
                          *(Path(v) for v in env.values() if v.startswith("/"))])
    (results / "binds").write_text("".join(f"{p}\n" for p in binds) if image is None else "")
    run = Run(results, results / "console.log", accel=accel.label)
    sockdir = Path(tempfile.mkdtemp(prefix="gmemtest-qemu-"))  # short: a socket path is <108 B
    monitor = sockdir / "monitor.sock"
    cmd = qemu_command(req.kernel, results, accel, list(req.cmdline), root=root,
                       init=checkout / "vmimages/init", memory=req.memory, monitor=monitor,
                       machine=req.machine)
    if req.promises is not None:
        req.promises(kernel_cmdline(list(req.cmdline), accel=accel, machine=req.machine)).write(
            results / contract.FILE)
    (results / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    log.info("qemu (%s): %s", accel.label, shlex.join(cmd))
    log.info("limits: boot %.0f s, test %.0f s, total %.0f s, silence %.0f s%s", limits.boot,
             limits.test, limits.total, limits.silence,
             f"; {len(limits.tests)} tests their own, {min(limits.tests.values()):.0f} to "
             f"{max(limits.tests.values()):.0f} s ({TEST_LIMITS})" if limits.tests else "")
    start = time.monotonic()  # QEMU's start: what the boot's figures count from
    ctrl_c = _HeldSigint()
    try:
        proc = subprocess.Popen([*die_with_parent(), *cmd], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except BaseException:
        ctrl_c.release()
        raise
    console = Console(proc, run, start, echo=req.echo,
                      watch_reports=req.stop_at_report)
    try:
        ctrl_c.release()
        console.thread.start()
        ended = _watch(req, console, monitor)
        if ended is not None:
            run.limit, run.limit_hit = ended
    finally:
        _reap(proc)
        if console.thread.ident is not None:
            console.thread.join(timeout=5)
        shutil.rmtree(sockdir, ignore_errors=True)
        run.seconds = time.monotonic() - console.start
    status = results / "status"
    if status.exists() and status.read_text().strip().lstrip("-").isdigit():
        run.status = int(status.read_text())
    return run


def _dump_hung_guest(proc: subprocess.Popen[bytes], monitor: Path, wait: float = 60) -> bool:
    """Inject an NMI through QEMU's monitor; the guest kernel (HANG_DUMP_CMDLINE) panics on it,
    printing its tasks and CPU backtraces, and QEMU exits. True when QEMU exited."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(monitor))
            _read_prompt(s)  # the banner
            s.sendall(b"nmi\n")
            _read_prompt(s)  # the command done
    except OSError:
        return False
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        return False
    return True


def _read_prompt(s: socket.socket) -> None:
    """Read the human monitor's output up to its next prompt."""
    seen = b""
    while b"(qemu)" not in seen:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("QEMU's monitor closed the connection")
        seen += chunk


def die_with_parent() -> list[str]:
    """A prefix giving QEMU the parent-death signal (util-linux setpriv), so that a runner
    killed outright (SIGKILL: a CI job cancelled, a test timeout) does not leave it running."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


class _HeldSigint:
    """Ctrl-C held back while QEMU is spawned, so that a SIGINT between the fork and Popen's
    return cannot leave a QEMU nobody knows about; release() raises it where QEMU is reaped."""

    def __init__(self) -> None:
        self.caught = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._catch)

    def _catch(self, signum: int, frame: object) -> None:
        self.caught = True

    def release(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        if self.caught:
            raise KeyboardInterrupt


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill QEMU's process group if it is still there, and wait for it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()
