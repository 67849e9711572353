"""One snapshot, opened for serving: memory-mapped Arrow columns and an index from product to rows.

``itemitem.arrow`` is in (tenant, algorithm, product_id, rank) order, so each
product's list is one contiguous run of rows. Opening a snapshot verifies it
(engine.snapshot), maps the file (no parsing, no copy: the page cache is
shared by every server process) and records where each run starts and ends.
A lookup is then a dictionary hit and a slice of at most ``limit`` rows.

A snapshot built with ``[visual] enabled`` also holds the Annoy index in
``visual/``; it is memory-mapped too (``models.index``), for look-alikes of a
product and nearest pictures to an uploaded photo or a text.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import snapshot

if TYPE_CHECKING:
    from models.index import VisualIndex

log = logging.getLogger("etalage.server")

VISUAL_FOLDER = "visual"
"""The snapshot's subfolder with the Annoy index (``engine.visual_stage.INDEX_FOLDER``)."""


class Recommendation(msgspec.Struct, frozen=True):
    """One related product, as the API returns it: its id, its rank in the list, and the algorithm's score."""

    product_id: str
    rank: int
    score: float


class ServedSnapshot:
    """A verified snapshot, read-only and memory-mapped, answering "top N for this product"."""

    def __init__(self, folder: Path) -> None:
        verified = snapshot.verify(folder)
        self.path = folder
        self.manifest = verified.manifest
        self.build_id: str = verified.build_id
        self.created_at = dt.datetime.fromisoformat(self.manifest["created_at"])
        self._source = pa.memory_map(str(folder / "itemitem.arrow"))
        rows = pa.ipc.open_file(self._source).read_all()
        self._columns = [_Columns(batch) for batch in rows.to_batches()]
        self._runs = _runs(rows)
        self._spanning = {key: _Columns(rows.slice(start, stop - start).combine_chunks().to_batches()[0]).rows(0, stop - start)
                          for key, (batch, start, stop) in self._runs.items() if batch < 0}
        with pa.memory_map(str(folder / "products.arrow")) as source:
            self.products = pa.ipc.open_file(source).read_all()
        keys = zip(self.products.column("tenant").to_pylist(), self.products.column("product_id").to_pylist())
        self._product_rows: dict[tuple[str, str], int] = {key: row for row, key in enumerate(keys)}
        self._tenant_rows: dict[str, list[int]] = {}
        for (tenant, _), row in self._product_rows.items():
            self._tenant_rows.setdefault(tenant, []).append(row)
        self.tenants = frozenset(self._tenant_rows)
        self.algorithms = frozenset(algorithm for _, algorithm, _ in self._runs)
        self.has_visual_folder = (folder / VISUAL_FOLDER).is_dir()
        self.visual = _visual_index(folder / VISUAL_FOLDER) if self.has_visual_folder else None

    def has_product(self, tenant: str, product_id: str) -> bool:
        return (tenant, product_id) in self._product_rows

    def product(self, tenant: str, product_id: str) -> dict:
        """The catalogue row of a product (title, brand, category, colour, price, image path)."""
        return self.products.slice(self._product_rows[(tenant, product_id)], 1).to_pylist()[0]

    def catalogue_page(self, tenant: str, offset: int, limit: int) -> tuple[int, list[dict]]:
        """The tenant's products in catalogue order, ``limit`` from ``offset``, and how many it has in all."""
        rows = self._tenant_rows.get(tenant, [])
        return len(rows), self.products.take(pa.array(rows[offset : offset + limit], pa.int64())).to_pylist()

    def recommendations(self, tenant: str, algorithm: str, product_id: str, limit: int) -> list[Recommendation]:
        """The first ``limit`` of the product's list for ``algorithm`` on ``tenant``; empty if it has none."""
        run = self._runs.get((tenant, algorithm, product_id))
        if run is None:
            return []
        batch, start, stop = run
        if batch < 0:
            return self._spanning[(tenant, algorithm, product_id)][:limit]
        return self._columns[batch].rows(start, min(stop, start + limit))


def _visual_index(folder: Path) -> VisualIndex | None:
    """The snapshot's Annoy index, memory-mapped; None when this install cannot read it (no annoy)."""
    try:
        from models.index import NotIndexed, VisualIndex
    except ImportError as error:
        log.warning("snapshot has a visual index but annoy is not installed (pip install 'etalage[visual]'): %s", error)
        return None
    try:
        return VisualIndex.load(folder)
    except NotIndexed as error:
        raise snapshot.SnapshotInvalid(str(error)) from None


class _Columns:
    """The served columns of one record batch as NumPy views of the mapped file (no copies).

    Reading five rows through NumPy and the raw string buffers takes a few
    microseconds; through ``pyarrow``'s ``slice().to_pylist()`` it took 24.
    """

    def __init__(self, batch: pa.RecordBatch) -> None:
        related = batch.column("related_product_id")
        if related.null_count or batch.column("rank").null_count or batch.column("distance_score").null_count:
            raise snapshot.SnapshotInvalid("itemitem.arrow has NULLs in related_product_id, rank or distance_score")
        _, offsets, data = related.buffers()
        self.offsets = np.frombuffer(offsets, dtype=np.int32, count=len(related) + 1, offset=related.offset * 4)
        self.data = memoryview(data)
        self.rank = batch.column("rank").to_numpy()
        self.score = batch.column("distance_score").to_numpy()

    def rows(self, start: int, stop: int) -> list[Recommendation]:
        bounds = self.offsets[start : stop + 1].tolist()
        text = self.data[bounds[0] : bounds[-1]].tobytes()
        base = bounds[0]
        return [
            Recommendation(text[a - base : b - base].decode(), rank, score)
            for a, b, rank, score in zip(bounds, bounds[1:], self.rank[start:stop].tolist(), self.score[start:stop].tolist())
        ]


def _runs(rows: pa.Table) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """``(tenant, algorithm, product_id) -> (batch, first row, row after the last)``, checking the rows' order.

    A run that spans two record batches (at most one per batch boundary) gets
    batch -1 and its rows' positions in the whole table instead.
    """
    if rows.num_rows == 0:
        return {}
    keys = [rows.column(name) for name in ("tenant", "algorithm", "product_id")]
    changed = np.zeros(rows.num_rows - 1, dtype=bool)
    for key in keys:
        changed |= pc.not_equal(key.slice(1), key.slice(0, rows.num_rows - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(changed) + 1])
    stops = np.append(starts[1:], rows.num_rows)
    tenants, algorithms, products = (pc.take(key, pa.array(starts)).to_pylist() for key in keys)
    batch_starts = np.cumsum([0] + [len(b) for b in rows.to_batches()])
    batch = np.searchsorted(batch_starts, starts, side="right") - 1
    spans = stops > batch_starts[batch + 1]
    batch = np.where(spans, -1, batch)
    offset = np.where(spans, 0, batch_starts[np.maximum(batch, 0)])
    runs = {
        key: (int(b), int(start), int(stop))
        for key, b, start, stop in zip(zip(tenants, algorithms, products), batch, starts - offset, stops - offset)
    }
    if len(runs) != len(starts):
        msg = "itemitem.arrow is not in (tenant, algorithm, product_id, rank) order: a product's rows are split"
        raise snapshot.SnapshotInvalid(msg)
    return runs
