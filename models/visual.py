"""The visual stage in one call: catalogue photos to cached vectors, per-tenant Annoy forests and ``visual`` rows.

This is what ``etalage build`` runs after the click-based algorithms: it
reads each product's image path from the catalogue, takes vectors from the
embeddings cache or encodes the new photos, builds the index the server
memory-maps, and lays out the ``visual`` rows for ``itemitem``. The cold-start
blend is ``sql/visual_blend.sql``, run once ``itemitem`` holds the ``llr`` and
``visual`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from models import embeddings, index
from models.encoder import Encoder, Progress


@dataclass
class VisualResult:
    """What the visual stage made: the index, the ``visual`` itemitem rows, and what encoding cost."""

    index: index.VisualIndex
    rows: pa.Table
    stats: embeddings.EncodeStats


def catalogue_images(catalogue: pa.Table, base: Path) -> tuple[pa.Table, list[Path]]:
    """The (tenant, product_id) rows that name an image, and each one's path (relative paths resolved against ``base``).

    Raises:
        ValueError: the catalogue has no ``image`` column.
    """
    if "image" not in catalogue.column_names:
        msg = "the catalogue has no `image` column: the visual recommender needs each product's image path"
        raise ValueError(msg)
    image = catalogue.column("image").cast(pa.string())
    named = pc.and_(pc.is_valid(image), pc.not_equal(pc.utf8_trim_whitespace(image), ""))
    keys = catalogue.select(["tenant", "product_id"]).filter(named)
    paths = [base / value for value in image.filter(named).to_pylist()]  # an absolute value replaces base
    return keys, paths


def run(
    connection: duckdb.DuckDBPyConnection,
    catalogue: pa.Table,
    base: Path,
    encoder: Encoder,
    *,
    metric: str = "angular",
    n_trees: int = 50,
    search_k: int = -1,
    dims: int | None = 128,
    candidates: int = 100,
    neighbours: int = 32,
    top_n: int = 20,
    batch_size: int = 32,
    skip_unreadable: bool = False,
    progress: Progress | None = None,
    rows_progress: Callable[[int, int], None] | None = None,
    index_progress: Callable[[int, int], None] | None = None,
) -> VisualResult:
    """Encode (through the cache in ``connection``), index and list look-alikes for every catalogue product with an image.

    A product sold in several tenants has one photo, so it is hashed and
    encoded once and indexed in each tenant's forest.
    """
    keys, paths = catalogue_images(catalogue, base)
    vectors, present, stats = embeddings.vectors_for(
        connection, encoder, paths, batch_size=batch_size, progress=progress, skip_unreadable=skip_unreadable
    )
    keys = keys.filter(pa.array(present))
    built = index.build(
        keys,
        vectors[present],
        model_id=encoder.model_id,
        metric=metric,
        n_trees=n_trees,
        search_k=search_k,
        dims=dims or None,
        candidates=candidates,
        neighbours=neighbours,
        progress=index_progress,
    )
    rows = index.itemitem_rows(built, top_n, progress=rows_progress)
    return VisualResult(index=built, rows=rows, stats=stats)
