"""The row-local lists a build keeps for the next one, which ranks only the rows whose counts changed.

An hour of events changes the counts of a few thousand products. The
sequence-aware lists and the blend (``engine.udfs.cooccurrence.ROW_LOCAL``)
of a product depend on its own row of counts alone, so every other
product's are what the last build ranked. A build therefore keeps them in
the store (NumPy files, read back mapped) with the parameters they were
ranked by, and the next build that counts by delta ranks again only the
rows its deltas touch or whose sessions changed (:func:`changed`), and
writes only the lists changed since the last whole copy. The result is
the same lists, which the incremental tests compare with building from
scratch. The published lists keep each entry's count and
score (``itemitem``'s rows need them), the evaluation's training lists
only the related products.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import Algorithms
from engine.pipeline.counts import Counts
from engine.publish.store import Store
from engine.udfs.cooccurrence import ROW_LOCAL_ALGORITHMS, Lists, Ranked
from engine.udfs.pairs import PairRows

log = logging.getLogger("etalage.build")

ARRAYS = ("related", "length", "cooccurrence", "score")
"""The :class:`~engine.udfs.cooccurrence.Ranked` arrays, each a ``<name>.npy`` file (the last two only with evidence)."""
PARAMETERS = "parameters.json"
CHANGES_SHARE = 0.2
"""Kept lists are written whole again once the items whose lists changed since pass this share of them."""


def worth_keeping(algorithms: Algorithms) -> bool:
    """Whether the build computes a row-local algorithm, whose lists a later build could reuse (a build of llr's
    lists alone keeps none)."""
    return any(algorithm in algorithms.compute for algorithm in ROW_LOCAL_ALGORITHMS)


def parameters(algorithms: Algorithms) -> dict:
    """What the lists were ranked by besides the counts: lists ranked otherwise are not reused."""
    return {
        "top_n": algorithms.top_n,
        "min_support": algorithms.min_support,
        "sr_window": algorithms.sr_window,
        "compute": list(algorithms.compute),
    }


@dataclass(frozen=True)
class Files:
    """Where kept lists are: a folder of every item's lists, and one of the lists changed since, if any."""

    base: str
    changes: str | None = None


@dataclass(frozen=True)
class Reusable:
    """Kept lists a ranking starts from: where they are kept, the lists (mapped), and which items to rank again."""

    files: Files
    ranked: Ranked
    changed: np.ndarray  # bool per item of the counts being ranked

    @property
    def start(self) -> tuple[Ranked, np.ndarray]:
        """The lists and the rows to rank again, as the kernel takes them (``cooccurrence.top_lists``' ``ranked``)."""
        return self.ranked, self.changed


def reusable(
    store: Store,
    files: Files | None,
    before: Counts,
    after: Counts,
    deltas: dict[str, PairRows],
    algorithms: Algorithms,
    *,
    evidence: bool,
) -> Reusable | None:
    """The lists kept in ``files``, ranked from ``before``, to rank ``after`` (``before`` plus ``deltas``) from;
    None where there are none to reuse (:func:`load`)."""
    ranked = load(store, files, algorithms, evidence=evidence)
    if files is None or ranked is None:
        return None
    return Reusable(files, ranked, changed(before, after, deltas))


def save(store: Store, name: str, lists: Lists, algorithms: Algorithms, reused: Reusable | None = None) -> Files:
    """Keep ``lists``' row-local lists in the store under ``name``.

    ``reused``: the kept lists they were ranked from. While the rows changed
    since the kept base stay within :data:`CHANGES_SHARE` of the items, only
    they are written, beside that base; otherwise every list, as a new base.
    """
    ranked = lists.row_local()
    arrays = {array: getattr(ranked, array) for array in ARRAYS if getattr(ranked, array) is not None}
    if reused is not None:
        earlier = reused.ranked
        since = earlier.rows if earlier.rows is not None else np.zeros(0, np.int64)
        rows = np.union1d(since, np.flatnonzero(reused.changed)).astype(np.int64)
        if rows.size <= CHANGES_SHARE * reused.changed.size:
            folder = _folder(store, f"{name}-changes")
            np.save(folder / "rows.npy", rows)
            for array, values in arrays.items():
                np.save(folder / f"{array}.npy", values[:, rows])
            return Files(reused.files.base, store.relative(folder))
    folder = _folder(store, name)
    for array, values in arrays.items():
        np.save(folder / f"{array}.npy", values)
    (folder / PARAMETERS).write_text(json.dumps(parameters(algorithms)))
    return Files(store.relative(folder))


def load(store: Store, files: Files | None, algorithms: Algorithms, *, evidence: bool) -> Ranked | None:
    """The lists kept in ``files`` (mapped, read-only), or None where there are none to reuse: none kept, other
    parameters, no evidence where ``evidence`` asks for it, or a file that cannot be read (then all are ranked)."""
    if files is None:
        return None
    wanted = ARRAYS if evidence else ARRAYS[:2]
    try:
        base = store.absolute(files.base)
        if json.loads((base / PARAMETERS).read_text()) != parameters(algorithms):
            return None
        ranked = _ranked(base, wanted)
        if files.changes is not None:
            changes = store.absolute(files.changes)
            ranked = _ranked(changes, wanted, rows=np.load(changes / "rows.npy"), under=ranked)
    except (OSError, ValueError) as error:
        log.warning("ranking every list again: the kept lists at %s cannot be read (%s)", files, error)
        return None
    return ranked


def _folder(store: Store, name: str) -> Path:
    folder = store.new("lists", name)
    folder.mkdir()
    return folder


def _ranked(folder: Path, wanted: tuple[str, ...], **layer: Any) -> Ranked:
    """The lists in ``folder``, the arrays of :data:`ARRAYS` that are ``wanted``, mapped read-only."""
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in wanted}
    return Ranked(arrays["related"], arrays["length"], arrays.get("cooccurrence"), arrays.get("score"), **layer)


def changed(before: Counts, after: Counts, deltas: dict[str, PairRows]) -> np.ndarray:
    """bool per item of ``after`` (``before`` plus ``deltas``): whether its row-local lists may differ from those
    ranked from ``before``: a delta touches its row of counts, its sessions changed, or it is newly numbered."""
    n, known = after.sessions.size, before.sessions.size
    rows = np.ones(n, bool)
    rows[:known] = before.sessions != after.sessions[:known]
    for delta in deltas.values():
        rows |= delta.padded(n).length[:n] > 0
    return rows
