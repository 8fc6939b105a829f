"""The one way gmemtest holds a kernel object: an fd closed exactly once, by close() or by
leaving a ``with`` block."""

from __future__ import annotations

import os
from typing import Self


class FdObject:
    """Owner of ``fd``. Subclasses release what depends on it in :meth:`_before_close` (child
    objects, mappings of the fd) and what outlives it in :meth:`_after_close`."""

    fd: int

    def _before_close(self) -> None:
        pass

    def _after_close(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            self._before_close()
            os.close(self.fd)
            self.fd = -1
            self._after_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
