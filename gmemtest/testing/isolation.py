"""Each test in a process of its own, as the kselftest harness forks each test: a kernel bug that
kills the test process (SIGBUS on a host access the kernel should allow, SIGSEGV, an abort) or
hangs it is one failed test, named with the signal and the line it came from, and the rest of
the suite runs and reports.

pytest runs a test's whole protocol (setup, call, teardown) in a forked child; the child sends
the reports back through a pipe and exits. A child that dies of a signal becomes a failed
report. pytest-timeout's alarm rings in the parent (a child inherits no timers): the child
is then stopped with SIGABRT, faulthandler writing where it was, and the test fails, named
with that line; a child that outlives its time by a grace period more (stuck in the kernel)
is killed and reported the same way.
Fixtures wider than a test are set up again in each child: the suite keeps those cheap.
The parent sleeps until the child writes or exits (a poll on the pipe and on a pidfd of the
child), and freezes its objects for the fork, so that the child's garbage collections do not
walk (and so copy) every page of the parent's heap.

A test that fails page allocations on purpose (fail_page_alloc) would lose its injected
failure to the child's own copy-on-write faults (every first write to memory shared with the
parent allocates a page): for those the child first takes its own copy of every page
(mlockall(MCL_CURRENT) populates the private writable mappings for writing, munlockall then
lets them go), which costs a few tenths of a second.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import tempfile
import time
from collections.abc import Callable

import pytest
from _pytest.runner import runtestprotocol

GRACE = 60.0  # seconds past the per-test timeout before a child counts as hung
VANISHED = -1  # the child's status when it was reaped before this wait could read it
# Seconds a child stopped with SIGABRT gets to write where it was and die, and one then killed
# (SIGKILL) gets to die: a child still there is stuck in the kernel, where waiting longer does
# not help, and the suite goes on without it.
ABORT_WAIT = 5.0
KILL_WAIT = 3.0


def run_forked(item: pytest.Item, nextitem: pytest.Item | None, own_pages: bool) -> None:
    """pytest_runtest_protocol for ``item``, in a child process (with its own copy of every
    page first, when ``own_pages``)."""
    hook = item.ihook
    hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _reports(item, nextitem, own_pages):
        hook.pytest_runtest_logreport(report=report)
    hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _reports(item: pytest.Item, nextitem: pytest.Item | None,
             own_pages: bool) -> list[pytest.TestReport]:
    config = item.config
    trace = tempfile.NamedTemporaryFile(prefix="gmemtest-trace-", suffix=".txt", delete=False)
    trace.close()
    read_end, write_end = os.pipe()
    gc.freeze()  # the child's collections leave the parent's heap (and its pages) alone
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        raise
    if pid == 0:  # the child: run the test, send its reports, leave without cleanup
        status = 1
        try:
            os.close(read_end)
            if own_pages:
                _copy_every_page()
            import faulthandler

            with open(trace.name, "w") as f:
                faulthandler.enable(file=f, all_threads=True)
                reports = runtestprotocol(item, log=False, nextitem=nextitem)
                # pickle, not JSON: a skip's location is a tuple, and must stay one
                data = pickle.dumps([config.hook.pytest_report_to_serializable(
                    config=config, report=r) for r in reports])
                with os.fdopen(write_end, "wb") as out:
                    out.write(data)
                status = 0
        finally:
            os._exit(status)
    gc.unfreeze()
    os.close(write_end)
    child = os.pidfd_open(pid)
    timed_out = False
    try:
        data, status, hung = _wait(pid, child, read_end, _deadline(item))
    except pytest.fail.Exception:
        # pytest-timeout's alarm, which fires in this process (a forked child has no timers):
        # the test outlived its timeout. faulthandler in the child says where it was.
        timed_out = True
        with contextlib.suppress(ProcessLookupError):  # reaped already: _wait says so
            os.kill(pid, signal.SIGABRT)
        data, status, hung = _wait(pid, child, read_end, ABORT_WAIT)
    finally:
        os.close(child)
    try:
        where = _where(open(trace.name, errors="replace").read(), item)
    finally:
        os.unlink(trace.name)
    if data and not hung and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return [config.hook.pytest_report_from_serializable(config=config, data=d)
                for d in pickle.loads(data)]
    if timed_out:
        why = (f"the test outlived its timeout ({_deadline(item) - GRACE:.0f} s) and was "
               f"stopped{where}")
    elif status == VANISHED:
        why = f"the test process was gone before its status could be read{where}"
    elif hung:
        why = (f"the test process hung: still running {_deadline(item):.0f} s after it started "
               f"(the per-test timeout could not stop it), killed{where}")
    elif os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        why = f"the test process was killed by {name}{where}"
    else:
        why = f"the test process exited {os.WEXITSTATUS(status)} without its reports{where}"
    return [_failure(item, why)]


def _copy_every_page() -> None:
    """Break copy-on-write sharing with the parent for every page mapped now."""
    from gmemtest.kvm import libc

    if libc.lib.mlockall(libc.MCL_CURRENT) != 0:
        raise OSError(libc.ffi.errno, "mlockall(MCL_CURRENT)")
    libc.lib.munlockall()


def _deadline(item: pytest.Item) -> float:
    """How long the child may run: its timeout (the mark, else --timeout) and a grace."""
    mark = item.get_closest_marker("timeout")
    timeout = mark.args[0] if mark and mark.args else item.config.getoption("timeout", None)
    return float(timeout or 300) + GRACE


def _wait(pid: int, child: int, fd: int, seconds: float) -> tuple[bytes, int, bool]:
    """Read the child's reports from ``fd`` and reap it (``child`` is its pidfd, readable once
    it has exited); kill it when it outlives ``seconds``."""
    os.set_blocking(fd, False)
    waiting = select.poll()
    waiting.register(fd, select.POLLIN)
    waiting.register(child, select.POLLIN)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    hung, reading = False, True
    while True:
        waiting.poll(max(0.0, deadline - time.monotonic()) * 1000)
        with contextlib.suppress(BlockingIOError):
            while reading and (chunk := os.read(fd, 65536)):
                chunks.append(chunk)
            if reading:  # the child closed its end
                reading = False
                waiting.unregister(fd)
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (a wait the timeout's alarm cut short)
            status = VANISHED
            break
        if done:
            break
        if time.monotonic() >= deadline:
            if hung:
                status = 0  # unkillable (in the kernel): leave it, go on with the suite
                break
            hung = True
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + KILL_WAIT
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks), status, hung


def _where(trace: str, item: pytest.Item) -> str:
    """The line of the test's own file nearest the fault in faulthandler's dump."""
    path = str(item.path)
    for line in trace.splitlines():
        line = line.strip()
        if line.startswith("File ") and path in line:
            return f", at {line.removeprefix('File ')}"
    first = next((ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")),
                 None)
    return f", at {first.removeprefix('File ')}" if first else ""


def _failure(item: pytest.Item, why: str) -> pytest.TestReport:
    return pytest.TestReport(item.nodeid, item.location, dict.fromkeys(item.keywords, 1),
                             "failed", why, "call", [], 0.0)


class Isolated:
    """The plugin that runs each test of the session in a child of its own; those for which
    ``own_pages(item)`` holds get their own copy of every page first. A test for which
    ``skips(item)`` holds skips before any of its code runs: pytest's own protocol reports it
    here, without a child."""

    def __init__(self, own_pages: Callable[[pytest.Item], bool],
                 skips: Callable[[pytest.Item], bool]) -> None:
        self.own_pages = own_pages
        self.skips = skips

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None
                                ) -> bool | None:
        if self.skips(item):
            return None
        run_forked(item, nextitem, self.own_pages(item))
        return True
