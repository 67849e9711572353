"""Event ingest: find the Avro and Parquet files, check every one, and map them onto the ``events`` columns.

DuckDB reads the files itself (``read_avro``, ``read_parquet``), but it reads
a truncated Avro file up to the break without complaint, and fills a column
that one Parquet file lacks with NULLs. A build that silently loses or nulls
part of an hour of clicks is worse than one that stops, so every file is
checked first: Avro files block by block (magic, schema, sync markers, block
lengths), Parquet files by their footer, and all files for the columns the
mapping uses and their types. Any problem raises :class:`IngestError` naming
the file.

The mapping (``[events.mapping]`` in the config) is the one place where SQL
text comes from configuration: each expression becomes one column of the
``mapped_events`` view, cast to the documented type, which ``sql/events.sql``
and ``sql/ingest_stats.sql`` read.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import fastavro
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from engine import sqlfiles
from engine.config import ConfigError, EventSources

EVENT_COLUMNS: dict[str, str] = {
    "event_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "party_id": "VARCHAR",
    "session_id": "VARCHAR",
    "event_type": "VARCHAR",
    "product_id": "VARCHAR",
    "location": "VARCHAR",
    "tenant": "VARCHAR",
    "is_duplicate": "BOOLEAN",
    "is_corrupt": "BOOLEAN",
}
"""Each mapped column and the type its expression is cast to."""


def _source(connection: duckdb.DuckDBPyConnection, fmt: str, paths: list[str]) -> duckdb.DuckDBPyRelation:
    """A lazy relation over the files; the file list is passed as a value, never spliced into SQL."""
    if fmt == "avro":
        return connection.table_function("read_avro", [paths])
    return connection.read_parquet(paths, union_by_name=True)


class IngestError(RuntimeError):
    """An event or catalogue file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class EventFiles:
    """The files each configured glob matched, in a stable order."""

    avro: tuple[str, ...]
    parquet: tuple[str, ...]

    def by_format(self) -> dict[str, tuple[str, ...]]:
        """Non-empty formats only."""
        return {name: files for name, files in (("avro", self.avro), ("parquet", self.parquet)) if files}

    def __len__(self) -> int:
        return len(self.avro) + len(self.parquet)


def find(sources: EventSources) -> EventFiles:
    """Expand the configured globs; a glob that matches no file is an error, not an empty source."""
    found: dict[str, list[str]] = {"avro": [], "parquet": []}
    for name, patterns in (("avro", sources.avro), ("parquet", sources.parquet)):
        for pattern in patterns:
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                msg = f"no event files match {pattern} (events.{name}); is the collector writing there?"
                raise IngestError(msg)
            found[name].extend(matches)
    return EventFiles(avro=tuple(dict.fromkeys(found["avro"])), parquet=tuple(dict.fromkeys(found["parquet"])))


def mapping_columns(mapping: dict[str, str]) -> dict[str, set[str]]:
    """For each mapped column, the source columns its expression reads (lower case).

    Raises:
        ConfigError: an expression is not valid SQL.
    """
    needed = {}
    for key, expression in mapping.items():
        try:
            tree = sqlglot.parse_one(expression, read="duckdb")
        except sqlglot.errors.ParseError as error:
            msg = (
                f"events.mapping.{key} is not a valid SQL expression: {expression!r} ({error.errors[0]['description']})"
            )
            raise ConfigError(msg) from None
        needed[key] = {column.name.lower() for column in tree.find_all(exp.Column)}
    return needed


def check(files: EventFiles, mapping: dict[str, str], progress: Callable[[str], None] = lambda name: None) -> int:
    """Check every file's integrity and shape against the mapping; return the number of records seen in Avro blocks.

    ``progress`` is called once per file checked.
    """
    needed = mapping_columns(mapping)
    required = set().union(*needed.values())
    records = 0
    for fmt, paths in files.by_format().items():
        reference: tuple[str, dict[str, str]] | None = None
        for path in paths:
            if fmt == "avro":
                columns, count = _avro_columns(path)
                records += count
            else:
                columns = _parquet_columns(path)
            missing = sorted(required - set(columns))
            if missing:
                users = sorted(key for key, cols in needed.items() if missing[0] in cols)
                msg = f"{path}: no column {missing[0]!r}, which events.mapping.{users[0]} reads"
                raise IngestError(msg)
            if reference is None:
                reference = (path, columns)
            for column in sorted(required):
                if columns[column] != reference[1][column]:
                    msg = (
                        f"{path}: column {column!r} is {columns[column]} here"
                        f" but {reference[1][column]} in {reference[0]}"
                    )
                    raise IngestError(msg)
            progress(path)
    return records


def _avro_columns(path: str) -> tuple[dict[str, str], int]:
    """Read every block of an Avro container file; return its column types and record count."""
    try:
        with open(path, "rb") as stream:
            reader = fastavro.block_reader(stream)
            schema = reader.writer_schema
            count = sum(block.num_records for block in reader)
    except EOFError as error:
        msg = f"{path}: truncated Avro file ({error})"
        raise IngestError(msg) from None
    except Exception as error:  # fastavro raises many types for a damaged container
        msg = f"{path}: not a readable Avro container file ({type(error).__name__}: {error})"
        raise IngestError(msg) from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        msg = f"{path}: Avro schema is not a record"
        raise IngestError(msg)
    return {field["name"].lower(): _avro_type(field["type"]) for field in schema["fields"]}, count


def _avro_type(avro_type: object) -> str:
    if isinstance(avro_type, list):
        return " | ".join(sorted(_avro_type(t) for t in avro_type if t != "null"))
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("type"))
    return str(avro_type)


def _parquet_columns(path: str) -> dict[str, str]:
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises ArrowInvalid/OSError for damaged files
        msg = f"{path}: not a readable Parquet file ({error})"
        raise IngestError(msg) from None
    return {field.name.lower(): str(field.type) for field in schema}


def load_events(connection: duckdb.DuckDBPyConnection, files: EventFiles, mapping: dict[str, str]) -> None:
    """Create ``events`` and ``ingest_stats`` from the files, through the mapping.

    The mapped rows are a temporary view, ``mapped_events``, not a table: the
    events query reads every column once, and the ingest counts read only the
    two flag columns (DuckDB pushes the projection into the Parquet reader).
    Each expression is first tried on its own, so a broken one is reported by
    its config key rather than as a failure of one long query.
    """
    mapped = None
    for fmt, paths in files.by_format().items():
        probe = _source(connection, fmt, [paths[0]]).limit(0)
        for key, sql_type in EVENT_COLUMNS.items():
            try:
                probe.select(f"CAST(({mapping[key]}) AS {sql_type})").fetchall()
            except duckdb.Error as error:
                msg = f"events.mapping.{key} fails on the {fmt} files: {mapping[key]!r}: {str(error).splitlines()[0]}"
                raise ConfigError(msg) from None
        columns = [f"'{fmt}' AS source_format"] + [
            f"CAST(({mapping[key]}) AS {sql_type}) AS {key}" for key, sql_type in EVENT_COLUMNS.items()
        ]
        relation = _source(connection, fmt, list(paths)).select(", ".join(columns))
        mapped = relation if mapped is None else mapped.union(relation)
    mapped.create_view("mapped_events")
    try:
        sqlfiles.create_table(connection, "events")
        sqlfiles.create_table(connection, "ingest_stats")
    except duckdb.Error as error:
        msg = f"reading {len(files)} event files failed: {error}"
        raise IngestError(msg) from None
    finally:
        connection.execute("DROP VIEW mapped_events")


CATALOGUE_COLUMNS = ("tenant", "product_id", "title", "brand", "category", "colour", "price", "image")
"""The catalogue's columns; ``tenant`` and ``product_id`` are required, the rest may be absent."""


def load_catalogue(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Create ``products`` from the catalogue Parquet file, refusing duplicates and missing keys."""
    columns = _parquet_columns(str(path)) if path.exists() else None
    if columns is None:
        msg = f"{path}: catalogue file does not exist (catalogue.path)"
        raise IngestError(msg)
    for required in ("tenant", "product_id"):
        if required not in columns:
            msg = f"{path}: catalogue has no column {required!r}"
            raise IngestError(msg)
    selected = ", ".join(
        f"CAST({c if c in columns else 'NULL'} AS {'DOUBLE' if c == 'price' else 'VARCHAR'}) AS {c}"
        for c in CATALOGUE_COLUMNS
    )
    connection.execute(f"CREATE TABLE products AS SELECT {selected} FROM read_parquet($path)", {"path": str(path)})
    duplicate = connection.execute(
        "SELECT tenant, product_id FROM products GROUP BY ALL HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if duplicate:
        msg = f"{path}: product {duplicate[1]!r} appears more than once for tenant {duplicate[0]!r}"
        raise IngestError(msg)
