"""The snapshot a server process answers from, switched when ``current`` points somewhere new.

Each request takes :attr:`LiveSnapshot.current` once and answers wholly
from that object, so a switch never mixes two snapshots in one answer, and a
request in flight keeps the old mapping alive until it finishes (Python frees
it when the last reference goes; a pruned folder's files stay readable while
mapped). A snapshot that fails to open or verify is logged and skipped; the
process keeps serving the one it has.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from engine.publish import snapshot
from server.reader import ServedSnapshot

log = logging.getLogger("etalage.server")


class NoSnapshot(RuntimeError):
    """Nothing has been published under the snapshots root yet."""


class LiveSnapshot:
    """Holds the served snapshot of one process and reloads it from ``<root>/current``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current: ServedSnapshot | None = None
        self.failed: dict[str, str] = {}
        """Targets that failed to load, with the reason, so a broken one is not retried every second."""

    def target(self) -> str | None:
        """The folder name ``current`` points at now, or None before the first build."""
        try:
            return os.readlink(self.root / snapshot.CURRENT)
        except FileNotFoundError:
            return None

    def refresh(self) -> bool:
        """Load the snapshot ``current`` points at if it is new; return whether the served one changed."""
        target = self.target()
        if target is None or target in self.failed or (self.current and self.current.path.name == target):
            return False
        try:
            loaded = ServedSnapshot(self.root / target, previous=self.current)
        except Exception as error:  # noqa: BLE001 - whatever is wrong with it, keep serving the one we have
            self.failed[target] = str(error)
            unforeseen = not isinstance(error, (snapshot.SnapshotInvalid, OSError))
            log.error("not serving snapshot %s: %s", target, error, exc_info=unforeseen)
            return False
        previous, self.current = self.current, loaded
        log.info("serving snapshot %s (was %s)", loaded.build_id, previous.build_id if previous else "none")
        return True

    def get(self) -> ServedSnapshot:
        """The snapshot to answer one request from."""
        if self.current is None:
            raise NoSnapshot(f"no snapshot is published under {self.root} yet; run `etalage build`")
        return self.current
