"""Making a write survive a crash (``fsync``), and saying clearly when it cannot happen because the disk is full."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a full file system or an exhausted quota."""
_QUOTED_PATH = re.compile(r'"([^"]+)"')


class DiskFull(OSError):
    """A write failed for want of space (ENOSPC) or quota (EDQUOT); the message names the path being written."""


def fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder whose entries changed) to disk before anyone relies on it."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def disk_full(error: BaseException, path: Path | None = None) -> DiskFull | None:
    """``error`` as a :class:`DiskFull` naming the path it was writing, or None when it is not about space.

    The path is the error's own (``filename``, or the quoted path in a
    DuckDB message), else ``path``. DuckDB and PyArrow report a full disk
    in their message only, so the message is read too.
    """
    if isinstance(error, DiskFull):
        return error
    code = getattr(error, "errno", None)
    text = str(error)
    if code not in FULL and not any(os.strerror(c) in text for c in FULL):
        return None
    named = getattr(error, "filename", None) or next(iter(_QUOTED_PATH.findall(text)), None) or path
    where = f"writing {named}" if named else "writing a file"
    reason = os.strerror(code) if code in FULL else next(os.strerror(c) for c in FULL if os.strerror(c) in text)
    msg = f"{reason} while {where}; free some space there (or point the path elsewhere) and run the command again"
    full = DiskFull(msg)
    full.errno = code if code in FULL else errno.ENOSPC
    return full


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full disk while the block writes ``path`` into :class:`DiskFull` naming it."""
    try:
        yield
    except OSError as error:
        full = disk_full(error, path)
        if full is None:
            raise
        raise full from error
