"""The log of a run: what the tool did, step by step with times (commands, phases, limits,
exits), written with :mod:`logging` into the run's results directory. The terminal shows
progress; the log is what to read afterwards."""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

LOGGER = logging.getLogger("gmemtest")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@contextlib.contextmanager
def attached(path: Path) -> Iterator[Path]:
    """Log everything of gmemtest's loggers to ``path`` for the duration; a log attached in
    one of several threads (boots side by side) gets only that thread's records, one attached
    in the main thread everybody's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    if threading.current_thread() is not threading.main_thread():
        thread = threading.get_ident()
        handler.addFilter(lambda record: record.thread == thread)
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.addHandler(handler)
    try:
        yield path
    except BaseException:
        LOGGER.exception("ended by an exception")
        raise
    finally:
        LOGGER.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def results_dir(path: Path, log: str = "gmemtest.log") -> Iterator[Path]:
    """A run's results directory with its log attached. When the run fails while the directory
    holds nothing but that log (no boot got to write anything), the directory goes: the
    failure is its one line on stderr, not a directory holding a traceback."""
    existed = path.exists()
    try:
        with attached(path / log):
            yield path
    except BaseException:
        if not existed and path.is_dir() and {p.name for p in path.iterdir()} <= {log}:
            shutil.rmtree(path, ignore_errors=True)
        raise


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """A log file of a job whose boots keep their own directories: gone again when the job
    fails before it wrote anything but the log."""
    try:
        with attached(path):
            yield path
    except BaseException:
        path.unlink(missing_ok=True)
        raise
