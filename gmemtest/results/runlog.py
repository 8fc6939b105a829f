"""The log of a run: what the tool did, step by step with times (commands, phases, limits,
exits), written with :mod:`logging` into the run's results directory. The terminal shows
progress; the log is what to read afterwards."""

from __future__ import annotations

import contextlib
import logging
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
