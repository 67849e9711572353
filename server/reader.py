"""One snapshot, opened for serving: memory-mapped Arrow columns, and lists found by arithmetic.

The snapshot's parts (``itemitem.arrow``, and those linked from earlier
snapshots) hold each list as one contiguous run of rows, each row already
rendered as the API's JSON (``item_json``). ``lists.arrow`` says where each
(algorithm, catalogue product)'s run starts in the parts laid end to end,
one block per algorithm in ``products.arrow``'s order. Opening a snapshot verifies all of that
(engine.publish.snapshot) and maps the files (no parsing, no copy: the page cache is
shared by every server process). A lookup is then one dictionary hit for
the product's row, some arithmetic, and one slice of bytes: no objects are
built per item, and a new snapshot needs no index of every list.

A snapshot built with ``[visual] enabled`` also holds the Annoy index in
``visual/``; it is memory-mapped too (``models.index``), for look-alikes of a
product and nearest pictures to an uploaded photo or a text.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.publish import snapshot

if TYPE_CHECKING:
    from models.index import VisualIndex

log = logging.getLogger("etalage.server")

VISUAL_FOLDER = "visual"
"""The snapshot's subfolder with the Annoy index (``engine.pipeline.visual_stage.INDEX_FOLDER``)."""
CHUNK = 8192
"""Catalogue rows indexed between two releases of the GIL while a new snapshot loads beside a serving one."""


class Recommendation(msgspec.Struct, frozen=True):
    """One related product, as the API returns it: its id, its rank in the list, and the algorithm's score."""

    product_id: str
    rank: int
    score: float


class ServedSnapshot:
    """A verified snapshot, read-only and memory-mapped, answering "top N for this product".

    ``previous`` is the snapshot this one replaces: when both have the same
    catalogue (the same products.arrow sha256), its product index is reused
    instead of built again.
    """

    def __init__(self, folder: Path, previous: ServedSnapshot | None = None) -> None:
        verified = snapshot.verify(folder)
        self.path = folder
        self.manifest = verified.manifest
        self.build_id: str = verified.build_id
        self.created_at = dt.datetime.fromisoformat(self.manifest["created_at"])
        self.served_algorithm = snapshot.served_algorithm(self.manifest)
        parts = [snapshot.read_table(folder / name).column("item_json") for name in snapshot.parts(self.manifest)]
        self._json = [_JsonColumn(chunk) for part in parts for chunk in part.chunks if len(chunk)]
        self._json_starts = np.cumsum([0] + [column.length for column in self._json[:-1]]).tolist()
        lists = snapshot.read_table(folder / "lists.arrow")
        self._first = memoryview(lists.column("first_row").to_numpy())
        self._rows = memoryview(lists.column("rows").to_numpy())
        self.products = snapshot.read_table(folder / "products.arrow")
        self._blocks = {
            algorithm: block * self.products.num_rows
            for block, algorithm in enumerate(pc.unique(lists.column("algorithm")).to_pylist())
        }
        self.algorithms = frozenset(self._blocks)
        self._product_rows: dict[tuple[str, str], int]
        self._tenant_rows: dict[str, list[int]]
        if previous is not None and _catalogue_sha256(previous) == _catalogue_sha256(self):
            self._product_rows, self._tenant_rows = previous._product_rows, previous._tenant_rows
        else:
            self._product_rows = _product_rows(self.products)
            self._tenant_rows = {}
            for (tenant, _), row in self._product_rows.items():
                self._tenant_rows.setdefault(tenant, []).append(row)
        self.tenants = frozenset(self._tenant_rows)
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

    def items_json(self, tenant: str, algorithm: str, product_id: str, limit: int) -> bytes | None:
        """The first ``limit`` items of the product's list for ``algorithm`` as the API's JSON array.

        ``[]`` when the algorithm has no list for the product, None when the
        tenant's catalogue has no such product. One slice of ``item_json``'s
        bytes (each row ends with a comma: the last one is dropped), so the
        answer costs the same for 1 item or 100.
        """
        row = self._product_rows.get((tenant, product_id))
        if row is None:
            return None
        block = self._blocks.get(algorithm)
        if block is None:
            return b"[]"
        count = min(self._rows[block + row], limit)
        if count <= 0:
            return b"[]"
        first = self._first[block + row]
        batch = bisect.bisect_right(self._json_starts, first) - 1
        column, local = self._json[batch], first - self._json_starts[batch]
        if local + count <= column.length:
            return b"[" + column.data[column.offsets[local] : column.offsets[local + count] - 1] + b"]"
        return b"[" + b"".join(self._json_rows(first, count))[:-1] + b"]"

    def recommendations(self, tenant: str, algorithm: str, product_id: str, limit: int) -> list[Recommendation]:
        """:meth:`items_json` decoded (empty for an unknown product)."""
        return decoded(self.items_json(tenant, algorithm, product_id, limit) or b"[]")

    def _json_rows(self, first: int, count: int) -> list[bytes]:
        """The rendered rows ``first`` to ``first + count``, for a list that spans two record batches."""
        pieces = []
        row, stop = first, first + count
        while row < stop:
            batch = bisect.bisect_right(self._json_starts, row) - 1
            column, local = self._json[batch], row - self._json_starts[batch]
            end = min(stop - self._json_starts[batch], column.length)
            pieces.append(column.data[column.offsets[local] : column.offsets[end]].tobytes())
            row = self._json_starts[batch] + end
        return pieces


def decoded(items_json: bytes) -> list[Recommendation]:
    """A list as :meth:`ServedSnapshot.items_json` gives it, as objects (the gateway logs the ids it showed)."""
    return msgspec.json.decode(items_json, type=list[Recommendation])


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


class _JsonColumn:
    """One record batch's ``item_json`` as memoryviews of the mapped file: offsets as ints, and the bytes."""

    def __init__(self, column: pa.StringArray) -> None:
        _, offsets, data = column.buffers()  # no NULLs: engine.publish.snapshot.verify refuses them
        self.length = len(column)
        self.offsets = memoryview(offsets)[column.offset * 4 : (column.offset + self.length + 1) * 4].cast("i")
        self.data = memoryview(data)


def _catalogue_sha256(served: ServedSnapshot) -> str:
    return served.manifest["files"]["products.arrow"]["sha256"]


def _product_rows(products: pa.Table) -> dict[tuple[str, str], int]:
    """``(tenant, product_id) -> row`` of products.arrow, built a chunk at a time.

    The server loads a new snapshot on a thread beside the one answering
    requests; between chunks it sleeps for zero seconds, which hands the GIL
    to that thread, so a switch does not hold up requests for the whole build.
    """
    rows: dict[tuple[str, str], int] = {}
    for start in range(0, products.num_rows, CHUNK):
        part = products.slice(start, CHUNK)
        keys = zip(part.column("tenant").to_pylist(), part.column("product_id").to_pylist(), strict=True)
        rows.update(zip(keys, range(start, start + part.num_rows), strict=True))
        time.sleep(0)
    return rows
