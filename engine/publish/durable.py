"""Making a write survive a crash: ``fsync`` a file, or a folder after a rename in it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder whose entries changed) to disk before anyone relies on it."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
