"""The item-item lists: from the counts to ``itemitem``'s rows, by the kernel or by the readable SQL.

The kernel (``engine.udfs.cooccurrence``) ranks every product's related
products from the stored counts; the SQL path runs ``sql/session_steps.sql``,
``sql/pair_counts.sql`` .. ``sql/itemitem.sql`` over a ``session_items``
table (and the ``events`` and ``products`` its steps are read from), the readable
definition the kernel is tested against. With ``[visual] enabled`` the
look-alikes and their cold-start blend with the ``llr`` lists
(``sql/visual_blend.sql``) join the click-based lists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import sqlfiles
from engine.config import Algorithms
from engine.pipeline.counts import Counts
from engine.udfs import cooccurrence

SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("algorithm", pa.string()),
        ("product_id", pa.string()),
        ("rank", pa.int32()),
        ("related_product_id", pa.string()),
        ("distance_score", pa.float64()),
        ("cooccurrence", pa.int64()),
        ("product_sessions", pa.int64()),
        ("related_sessions", pa.int64()),
    ]
)
"""``itemitem``'s columns and their types (the kernel writes the text columns as dictionaries of them)."""

ROW_GROUP = 1 << 20
"""Rows per row group of the store's ``itemitem`` file."""
SORT_KEYS = ("tenant", "algorithm", "product_id")
"""``itemitem``'s order (then ``rank``): the columns whose row-group statistics prune a query."""

Timed = Callable[[str, Callable[[], None]], None]
"""Runs one named step (the build uses it to time and report steps)."""
SQL_STEPS = ("session_steps", "pair_counts", "ranked_pairs", "ranked_steps", "popular")
"""The SQL path's steps before ``sql/itemitem.sql``, each a temporary table."""


def kernel_rows(counts: Counts, algorithms: Algorithms) -> pa.Table:
    """``itemitem``'s click-based rows (the algorithms ``algorithms.compute`` names), by the kernels, from the stored counts."""
    return cooccurrence.rows_table(*kernel_lists(counts, algorithms))


def kernel_lists(
    counts: Counts, algorithms: Algorithms, ranked: tuple[cooccurrence.Ranked, np.ndarray] | None = None
) -> tuple[cooccurrence.Items, cooccurrence.Lists]:
    """The items and the lists :func:`kernel_rows` gives the rows of; ``ranked``: row-local lists to start from, and
    the rows to rank again (``engine.pipeline.kept_lists``)."""
    items = counts.item_table()
    lists = cooccurrence.top_lists(
        items,
        counts.rows(),
        top_n=algorithms.top_n,
        min_support=algorithms.min_support,
        sr_window=algorithms.sr_window,
        compute=algorithms.compute,
        ranked=ranked,
    )
    return items, lists


def sql_rows(connection: duckdb.DuckDBPyConnection, parameters: dict, timed: Timed) -> pa.Table:
    """The same rows by ``sql/session_steps.sql``, ``sql/pair_counts.sql`` .. ``sql/itemitem.sql``, from a ``session_items`` table.

    Its steps are temporary tables, ``item_counts`` among them.
    """
    for name in ("item_counts", "tenant_sessions", *SQL_STEPS):
        timed(name, functools.partial(sqlfiles.create_table, connection, name, parameters, temporary=True))
    return sqlfiles.query(connection, "itemitem", parameters).to_arrow_table()


def with_visual(
    connection: duckdb.DuckDBPyConnection, rows: pa.Table, visual_rows: pa.Table, counted: pa.Table, parameters: dict
) -> pa.Table:
    """``rows`` with the ``visual`` rows and the blend of ``sql/visual_blend.sql``, in itemitem's order.

    ``counted`` holds the item counts the blend reads (``tenant, product_id, sessions``).
    """
    together = pa.concat_tables([rows.cast(SCHEMA), visual_rows.select(SCHEMA.names).cast(SCHEMA)])
    connection.register("blended_rows", together)
    connection.register("blended_counts", counted)
    try:
        inputs = {"itemitem": "blended_rows", "item_counts": "blended_counts"}
        sqlfiles.create_table(connection, "visual_blend", parameters, temporary=True, reading=inputs)
        return sqlfiles.query(connection, "itemitem_visual", reading={"itemitem": "blended_rows"}).to_arrow_table()
    finally:
        connection.unregister("blended_rows")
        connection.unregister("blended_counts")
        connection.execute("DROP TABLE IF EXISTS visual_blend")


def item_counts(counts: Counts) -> pa.Table:
    """The counted items as ``item_counts``'s rows (``tenant, product_id, sessions``), for the blend."""
    live = np.flatnonzero(counts.sessions > 0)
    return pa.table(
        {
            "tenant": counts.items.column("tenant").take(live),
            "product_id": counts.items.column("product_id").take(live),
            "sessions": pa.array(counts.sessions[live], pa.int64()),
        }
    )


def typed(rows: pa.Table) -> pa.Table:
    """``rows`` with :data:`SCHEMA`'s columns and types, a column held as a dictionary of its type left one (no copy)."""

    def kept(field: pa.Field) -> pa.Field:
        held = rows.schema.field(field.name).type
        return field.with_type(held) if pa.types.is_dictionary(held) and held.value_type == field.type else field

    return rows.select(SCHEMA.names).cast(pa.schema([kept(field) for field in SCHEMA]))


def write(rows: pa.Table, target: Path) -> None:
    """Write :func:`typed` rows to the store as one Parquet file of :data:`SCHEMA`, in their order.

    Text held as dictionaries is written as dictionaries, each row group's
    cut down to the values the group uses: a kernel's dictionaries hold every
    product, which Parquet would otherwise write whole in every row group,
    and making the text plain first means Parquet hashes every string again.
    Row groups carry statistics for the sort keys only, which is what lets a
    query for one product skip the rest.
    """
    stored = pa.schema([_stored_field(rows.schema.field(field.name), field) for field in SCHEMA])
    with pq.ParquetWriter(
        target, stored, compression="snappy", write_statistics=list(SORT_KEYS), store_schema=False
    ) as writer:
        for start in range(0, rows.num_rows, ROW_GROUP):
            writer.write_table(_compact(rows.slice(start, ROW_GROUP), stored), row_group_size=ROW_GROUP)


def _stored_field(held: pa.Field, field: pa.Field) -> pa.Field:
    """How the store's file holds a :data:`SCHEMA` field: text held as a dictionary stays one, all else plain."""
    if pa.types.is_dictionary(held.type) and field.type == pa.string():
        return field.with_type(pa.dictionary(pa.int32(), pa.string()))
    return field


def _compact(rows: pa.Table, stored: pa.Schema) -> pa.Table:
    """``rows`` as ``stored`` holds them, each text dictionary cut down to the values these rows use."""

    def compact(column: pa.ChunkedArray, field: pa.Field) -> pa.Array:
        if not pa.types.is_dictionary(field.type):
            return column.cast(field.type).combine_chunks()
        array = column.combine_chunks()
        if array.null_count:
            return pc.dictionary_encode(array.cast(pa.string()))
        indices = array.indices.to_numpy(zero_copy_only=False)
        used = np.zeros(len(array.dictionary), bool)
        used[indices] = True
        renumbered = (np.cumsum(used) - 1).astype(np.int32)
        return pa.DictionaryArray.from_arrays(renumbered[indices], array.dictionary.filter(used))

    return pa.table([compact(rows.column(field.name), field) for field in stored], schema=stored)
