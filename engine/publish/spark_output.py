"""``etalage publish --from DIR``: a Spark build's Parquet tables made the live snapshot, queried like a warehouse.

A Spark build (``engine.spark.runner``) writes every warehouse table as a
Parquet folder under its output, and ``_SUCCESS`` last, naming its build.
Publishing takes that output in the way a DuckDB build ends: it checks that
the build finished and that each table has the contract's columns (naming
the table and column that differ), adds the build's ``builds`` and
``evaluation`` rows to the warehouse's history, makes the warehouse's other
tables views over the Parquet folders (so ``etalage sql`` queries them),
gates the scores against the live snapshot, and stages, verifies and
switches a snapshot of the same format as a DuckDB build's. No Spark is
needed to publish: DuckDB reads the folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from engine import sqlfiles
from engine.config import Config
from engine.pipeline.itemitem import SCHEMA as ITEMITEM
from engine.publish import gate, served, snapshot, warehouse

SUCCESS = "_SUCCESS"
"""The marker a Spark build writes last into its output: a JSON object naming its build."""
TABLES = (
    "events",
    "ingest_stats",
    "products",
    "exposures",
    "click_through",
    "session_items",
    "item_counts",
    "tenant_sessions",
    "itemitem",
)
"""The tables a Spark build writes that the warehouse reads as views (its ``builds`` and ``evaluation`` join the history)."""
REQUIRED = {
    "itemitem": {field.name: field.type for field in ITEMITEM},
    "products": {"tenant": pa.string(), "product_id": pa.string()},
    "evaluation": {"build_id": pa.string(), "algorithm": pa.string(), "mrr_at_20": pa.float64()},
    "builds": {"build_id": pa.string(), "started_at": pa.timestamp("us"), "finished_at": pa.timestamp("us")},
}
"""The columns (and types) that publishing reads, which a Spark build's tables must have."""


class OutputRefused(RuntimeError):
    """The output is not a finished Spark build of the contract's tables; nothing was published."""


@dataclass
class Published:
    """What publishing took in and made live."""

    build_id: str
    source: str
    rows: dict[str, int] = field(default_factory=dict)
    served: gate.Served | None = None
    gate: gate.Decision | None = None
    snapshot: snapshot.Snapshot | None = None
    pruned: list[str] = field(default_factory=list)


def publish(config: Config, source: str, *, force: bool = False) -> Published:
    """Take the Spark output at ``source`` in: warehouse history and views, gate, snapshot.

    Raises:
        OutputRefused: no ``_SUCCESS`` marker, a build published already, a missing table, or a column the
            contract needs that is missing or of another type.
        gate.GateRefused: the build scores too far below the live snapshot (unless ``force``).
    """
    build_id = finished(source)
    with snapshot.locked(config.snapshots.root):
        snapshot.clean(config.snapshots.root)
        if (config.snapshots.root / build_id).exists():
            msg = (
                f"{source}: build {build_id} is published already ({config.snapshots.root / build_id}); "
                f"`etalage rollback {build_id}` makes it live again"
            )
            raise OutputRefused(msg)
        with warehouse.rebuild(config.warehouse, config.memory_limit) as connection:
            tables = {name: _folder(source, name) for name in (*TABLES, "builds", "evaluation")}
            for name, files in tables.items():
                _check(connection, name, files)
            for name in TABLES:
                sqlfiles.create_view(connection, "stored_rows", {"files": [tables[name]]}, view=name)
            for history in ("builds", "evaluation"):
                _append(connection, history, tables[history], build_id)
            result = Published(build_id, source)
            rows = connection.table("itemitem").to_arrow_table()
            products = connection.table("products").to_arrow_table()
            result.rows = {"itemitem": rows.num_rows, "products": products.num_rows}
            evaluation = connection.execute("SELECT * FROM evaluation WHERE build_id = $id", {"id": build_id})
            scores = served.scores(evaluation.to_arrow_table().to_pylist(), build_id) or None
            live = snapshot.live(config.snapshots.root)
            result.served = gate.served_for(scores, config, live)
            result.gate = gate.decide(scores, live, result.served.algorithm, config.snapshots.max_mrr_drop, force)
            if not result.gate.publish:
                raise gate.GateRefused(result.gate)
            parameters = sqlfiles.scalar(
                connection.execute("SELECT parameters FROM builds WHERE build_id = $id", {"id": build_id})
            )
            manifest = {
                "parameters": {"algorithms": json.loads(parameters)},
                "config": str(config.source) if config.source else None,
                "engine": "spark",
                "source": source,
                "evaluation": scores,
                "served_algorithm": result.served.algorithm,
                "served_reason": result.served.reason,
                "gate": result.gate.record(),
            }
            staged = served.stage(config.snapshots.root, build_id, rows.cast(ITEMITEM), products, manifest, live=live)
        result.snapshot = snapshot.publish(config.snapshots.root, staged)
        result.pruned = snapshot.prune(config.snapshots.root, config.snapshots.keep)
    return result


def finished(source: str) -> str:
    """The build id that the output's ``_SUCCESS`` marker names; refused when the build did not finish."""
    marker = _join(source, SUCCESS)
    try:
        with warehouse.connect() as connection:
            found = connection.execute("SELECT content FROM read_text($path)", {"path": marker}).fetchone()
        if found is None:  # a path with no file reads as no rows
            raise duckdb.IOException(marker)
        text = found[0]
    except duckdb.Error:
        msg = (
            f"{source}: no {SUCCESS} marker: the Spark build that writes it did not finish (or this is not its output)"
        )
        raise OutputRefused(msg) from None
    try:
        return json.loads(text)["build_id"]
    except (ValueError, KeyError, TypeError):
        msg = f"{marker}: not an etalage Spark build's marker (a JSON object with its build_id)"
        raise OutputRefused(msg) from None


def _folder(source: str, table: str) -> str:
    return _join(source, table, "*.parquet")


def _join(source: str, *parts: str) -> str:
    return "/".join([source.rstrip("/"), *parts])


def _check(connection: duckdb.DuckDBPyConnection, table: str, files: str) -> None:
    """Refuse a table that is missing, or lacks a column publishing reads (or has it with another type)."""
    try:
        described = connection.execute("DESCRIBE SELECT * FROM read_parquet($files)", {"files": files}).fetchall()
    except duckdb.Error:
        msg = f"{files}: the Spark output has no {table} table"
        raise OutputRefused(msg) from None
    found = {row[0]: row[1] for row in described}
    for column, kind in REQUIRED.get(table, {}).items():
        wanted = _duckdb_type(kind)
        if column not in found:
            msg = f"{files}: table {table} has no column {column!r} ({wanted}), which publishing reads"
            raise OutputRefused(msg)
        if found[column] != wanted:
            msg = f"{files}: column {table}.{column} is {found[column]}, not {wanted}"
            raise OutputRefused(msg)


def _duckdb_type(kind: pa.DataType) -> str:
    names = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}
    return names.get(kind, "TIMESTAMP" if pa.types.is_timestamp(kind) else str(kind))


def _append(connection: duckdb.DuckDBPyConnection, history: str, files: str, build_id: str) -> None:
    """Add the output's rows of ``history`` to the warehouse's history table, unless they are there already."""
    present = sqlfiles.scalar(
        connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = $name AND database_name = current_database()",
            {"name": history},
        )
    )
    if present and sqlfiles.scalar(
        connection.execute(
            f"SELECT count(*) FROM {sqlfiles.identifier(history)} WHERE build_id = $id", {"id": build_id}
        )
    ):
        return  # published before (a rollback made another live): the history has it once
    connection.execute(
        "CREATE OR REPLACE TEMPORARY TABLE incoming AS SELECT * FROM read_parquet($files)", {"files": files}
    )
    for column in ("parameters", "counted_with"):  # Spark has no JSON type: these columns are their text
        if column in {row[0] for row in connection.execute("DESCRIBE incoming").fetchall()}:
            connection.execute(f"ALTER TABLE incoming ALTER {column} TYPE JSON")
    warehouse.append_history(connection, history, "incoming")
    connection.execute("DROP TABLE incoming")
