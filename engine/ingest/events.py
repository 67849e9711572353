"""Event ingest: new event files mapped onto the ``events`` columns and stored once, as one batch per build.

The mapping (``[events.mapping]`` in the config) is the one place where SQL
text comes from configuration: each expression becomes one column of the
``mapped_events`` view, cast to the documented type, which ``sql/events.sql``
and ``sql/file_counts.sql`` read. Only the columns some step reads are
stored; the flags are counted (per file, in the ledger) and their events dropped.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from engine import sqlfiles
from engine.config import ConfigError, MappedColumn
from engine.ingest import locations
from engine.ingest.files import EventFiles, IngestError

STORED_COLUMNS: dict[MappedColumn, str] = {
    "ts": "TIMESTAMP",
    "tenant": "VARCHAR",
    "session_id": "VARCHAR",
    "party_id": "VARCHAR",
    "event_type": "VARCHAR",
    "product_id": "VARCHAR",
}
"""The ``events`` columns, each a mapped expression cast to its type: what session_items, test_items and click_through read."""
FLAG_COLUMNS: dict[MappedColumn, str] = {"is_duplicate": "BOOLEAN", "is_corrupt": "BOOLEAN"}
"""Divolte's flags: events flagged either way are counted and dropped, never stored."""
MAPPED_COLUMNS = STORED_COLUMNS | FLAG_COLUMNS
"""Every mapped column: the keys of ``[events.mapping]``."""


def _source(connection: duckdb.DuckDBPyConnection, fmt: str, paths: list[str]) -> duckdb.DuckDBPyRelation:
    """A lazy relation over the files, with each row's file name.

    The relation API takes no bound parameters (a relation made from SQL
    with parameters is read whole at once), so the file list is written in
    as a literal that sqlglot quotes.
    """
    if fmt == "avro":
        return connection.sql(f"FROM read_avro({sqlfiles.literal(paths)}, filename = true)")
    return connection.read_parquet(paths, union_by_name=True, filename=True)


def write_batch(
    connection: duckdb.DuckDBPyConnection, files: EventFiles, mapping: dict[MappedColumn, str], target: Path
) -> list[dict]:
    """Map ``files``, write their unflagged events to the Parquet file ``target``; return what each file held.

    Each expression is first tried on its own, so a broken one is reported by
    its config key rather than as a failure of one long query. The returned
    rows (``sql/file_counts.sql``) are the ledger's counts: events read,
    dropped as duplicate or corrupt, and kept, per file.
    """
    with locations.duckdb_reads(connection, [path for paths in files.by_format().values() for path in paths]):
        return _write_mapped(connection, files, mapping, target)


def _write_mapped(
    connection: duckdb.DuckDBPyConnection, files: EventFiles, mapping: dict[MappedColumn, str], target: Path
) -> list[dict]:
    """:func:`write_batch` once ``connection`` can read the files."""
    mapped = None
    for fmt, paths in files.by_format().items():
        probe = _source(connection, fmt, [paths[0]]).limit(0)
        for key, sql_type in MAPPED_COLUMNS.items():
            try:
                probe.select(f"CAST(({mapping[key]}) AS {sql_type})").fetchall()
            except duckdb.Error as error:
                msg = f"events.mapping.{key} fails on the {fmt} files: {mapping[key]!r}: {str(error).splitlines()[0]}"
                raise ConfigError(msg) from None
        columns = [f"'{fmt}' AS source_format", "filename"] + [
            f"CAST(({mapping[key]}) AS {sql_type}) AS {key}" for key, sql_type in MAPPED_COLUMNS.items()
        ]
        relation = _source(connection, fmt, list(paths)).select(", ".join(columns))
        mapped = relation if mapped is None else mapped.union(relation)
    assert mapped is not None, "write_batch needs at least one file"
    mapped.create_view("mapped_events")
    try:
        counts = sqlfiles.query(connection, "file_counts").to_arrow_table().to_pylist()
        sqlfiles.copy(connection, "events", target)
    except duckdb.Error as error:
        msg = f"reading {len(files)} event files failed: {error}"
        raise IngestError(msg) from None
    finally:
        connection.execute("DROP VIEW mapped_events")
    return counts
