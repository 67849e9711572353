"""The item-item stage: from ``events`` and ``products`` to ``itemitem``, in the connection's current schema.

Used twice per build: once on every event for the published table, and once
on the events before the evaluation's cut-off (in schema ``holdout``). With
``[visual] enabled``, the look-alikes (the same rows both times: pictures do
not depend on events) and the cold-start blend join the click-based lists, so
the evaluation scores them like the others.
"""

from __future__ import annotations

from typing import Callable

import duckdb
import pyarrow as pa

from engine import sqlfiles
from engine.udfs import cooccurrence

Timed = Callable[[str, Callable[[], None]], None]
"""Runs one named step (the build uses it to time and report steps)."""


def stage(
    connection: duckdb.DuckDBPyConnection,
    pairs: str,
    parameters: dict,
    timed: Timed,
    visual_rows: pa.Table | None = None,
) -> None:
    """From ``events`` to ``itemitem``, in the connection's current schema, with ``visual_rows`` and their blend if given.

    ``parameters`` needs ``min_sessions`` too when ``visual_rows`` are given.
    """
    for name in ("session_items", "item_counts", "tenant_sessions"):
        timed(name, lambda name=name: sqlfiles.create_table(connection, name, parameters))
    _itemitem(connection, pairs, parameters, timed)
    if visual_rows is not None:
        timed("visual_blend", lambda: _with_visual(connection, visual_rows, parameters))


def _with_visual(connection: duckdb.DuckDBPyConnection, visual_rows: pa.Table, parameters: dict) -> None:
    """Add the ``visual`` rows to ``itemitem``, then the blend of ``sql/visual_blend.sql``, keeping itemitem's order."""
    connection.register("visual_rows", visual_rows)
    try:
        connection.execute("INSERT INTO itemitem SELECT * FROM visual_rows")
    finally:
        connection.unregister("visual_rows")
    sqlfiles.create_table(connection, "visual_blend", parameters, temporary=True)
    sqlfiles.create_table(connection, "itemitem_visual", table="itemitem")
    connection.execute("DROP TABLE visual_blend")


def kernel_rows(connection: duckdb.DuckDBPyConnection, *, top_n: int, min_support: int) -> pa.Table:
    """``itemitem``'s rows for the co-occurrence algorithms and ``popular``, by the kernel, from ``session_items`` and its counts."""
    sqlfiles.create_table(connection, "item_index", temporary=True)
    items = connection.table("item_index").order("item").to_arrow_table()  # read back, not computed again
    baskets = sqlfiles.query(connection, "baskets").to_arrow_table().column("items")
    return cooccurrence.itemitem_rows(items, baskets, top_n=top_n, min_support=min_support)


def _itemitem(connection: duckdb.DuckDBPyConnection, pairs: str, parameters: dict, timed: Timed) -> None:
    """``itemitem`` by the readable SQL path, or by the kernel that computes the same rows in their order."""
    if pairs == "sql":
        timed("pair_counts", lambda: sqlfiles.create_table(connection, "pair_counts", parameters, temporary=True))
        timed("ranked_pairs", lambda: sqlfiles.create_table(connection, "ranked_pairs", parameters, temporary=True))
        timed("popular", lambda: sqlfiles.create_table(connection, "popular", parameters, temporary=True))
        timed("itemitem", lambda: sqlfiles.create_table(connection, "itemitem"))
        return
    rows = {}

    def kernel() -> None:
        rows["itemitem"] = kernel_rows(connection, top_n=parameters["top_n"], min_support=parameters["min_support"])

    def copy() -> None:
        # Already in itemitem.sql's order, so a plain copy replaces its sort.
        connection.register("kernel_rows", rows.pop("itemitem"))
        connection.execute("CREATE TABLE itemitem AS SELECT * FROM kernel_rows")
        connection.unregister("kernel_rows")

    timed("kernel", kernel)
    timed("itemitem", copy)
