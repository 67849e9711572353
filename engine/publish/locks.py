"""An exclusive, non-blocking file lock, so that two cron runs never build or publish at once.

``flock`` is released by the kernel when the process dies, even by SIGKILL,
so a crashed build never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


class Busy(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive(lock_path: Path, holder: str) -> Iterator[None]:
    """Hold ``lock_path`` for the block, or raise :class:`Busy` naming ``holder`` at once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"{holder} (lock {lock_path} is held)"
            raise Busy(msg) from None
        yield
