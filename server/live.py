"""The snapshot a server process answers from, switched when ``current`` points somewhere new.

Each request takes :attr:`LiveSnapshot.current` once and answers wholly
from that object, so a switch never mixes two snapshots in one answer, and a
request in flight keeps the old mapping alive until it finishes (Python frees
it when the last reference goes; a pruned folder's files stay readable while
mapped). A snapshot that fails to open or verify is logged and skipped; the
process keeps serving the one it has.

When there is none to keep (at start, with ``current`` dangling, not a link,
or pointing at a damaged snapshot), the process serves the newest snapshot
that verifies instead of answering 503, and says so in its log. The files of
the served snapshot are checked against their checksums again in the
background (:meth:`LiveSnapshot.recheck`), since a file changed in place
changes the mapped bytes under the server; when they no longer match, the
process switches to the newest snapshot that verifies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from engine.publish import snapshot
from server import metrics
from server.reader import ServedSnapshot

log = logging.getLogger("etalage.server")
_SPAWN = multiprocessing.get_context("spawn")
"""A fresh interpreter for the background check: forking a server process with its threads is not safe."""


class NoSnapshot(RuntimeError):
    """Nothing has been published under the snapshots root yet."""


class LiveSnapshot:
    """Holds the served snapshot of one process and reloads it from ``<root>/current``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.current: ServedSnapshot | None = None
        self.failed: dict[str, str] = {}
        """Snapshot folders that failed to load or verify, with the reason, so a broken one is not retried."""
        self._problem: str | None = None
        self._switching = threading.Lock()

    def refresh(self) -> bool:
        """Load the snapshot ``current`` points at if it is new; return whether the served one changed.

        With nothing served yet and ``current`` unusable, serve the newest
        snapshot that verifies.
        """
        with self._switching:
            problem = snapshot.pointer_problem(self.root)
            if problem is not None and problem != self._problem:
                log.warning("%s; not switching", problem)
            self._problem = problem
            target = None if problem else self._target()
            fresh = target is not None and target not in self.failed and not self._serves(target)
            if fresh and target is not None and self._load(self.root / target):  # (the check again narrows the type)
                return True
            if self.current is None:
                missing = f"{self.root / snapshot.CURRENT} does not exist"
                return self._fall_back(problem or (f"snapshot {target} is not servable" if target else missing))
            return False

    def recheck(self) -> bool:
        """Verify every file of the served snapshot against its manifest again; on a mismatch, switch.

        Returns whether the served snapshot changed. The hashing (hundreds of
        MB) runs in a child process of the lowest CPU priority: a thread of
        low priority would still share the GIL with the requests, and could
        hold it while the scheduler left it waiting.
        """
        served = self.current
        if served is None:
            return False
        try:
            with ProcessPoolExecutor(1, _SPAWN, initializer=os.nice, initargs=(19,)) as child:
                child.submit(snapshot.verify, served.path).result()
        except snapshot.SnapshotInvalid as error:
            with self._switching:
                self.failed[served.path.name] = str(error)
                metrics.DAMAGED.inc()
                log.error("the served snapshot %s is damaged: %s", served.build_id, error)
                if self.current is served:
                    return self._fall_back(f"{served.build_id} is damaged")
        return False

    def get(self) -> ServedSnapshot:
        """The snapshot to answer one request from."""
        if self.current is None:
            raise NoSnapshot(f"no snapshot is published under {self.root} yet; run `etalage build`")
        return self.current

    def _target(self) -> str | None:
        try:
            return os.readlink(self.root / snapshot.CURRENT)
        except OSError:
            return None  # removed or replaced since pointer_problem looked: the next refresh sees it

    def _serves(self, name: str) -> bool:
        return self.current is not None and self.current.path.name == name

    def _load(self, folder: Path) -> bool:
        """Open, verify and serve ``folder``; on failure remember why and keep what is served."""
        try:
            loaded = ServedSnapshot(folder, previous=self.current)
        except Exception as error:  # whatever is wrong with it, keep serving the one we have
            self.failed[folder.name] = str(error)
            metrics.RELOAD_FAILURES.inc()
            unforeseen = not isinstance(error, (snapshot.SnapshotInvalid, OSError))
            log.error("not serving snapshot %s: %s", folder.name, error, exc_info=unforeseen)
            return False
        previous, self.current = self.current, loaded
        metrics.served(loaded.build_id, loaded.created_at.timestamp())
        log.info("serving snapshot %s (was %s)", loaded.build_id, previous.build_id if previous else "none")
        return True

    def _fall_back(self, why: str) -> bool:
        """Serve the newest published snapshot that verifies and is not the one served; return whether one did."""
        for candidate in reversed(snapshot.published(self.root)):
            name = candidate.path.name
            if name in self.failed or self._serves(name):
                continue
            if self._load(candidate.path):
                log.warning("%s: serving %s, the newest snapshot that verifies", why, name)
                return True
        if self.current is not None:
            log.error("%s, and no other snapshot verifies: still serving it", why)
        return False
