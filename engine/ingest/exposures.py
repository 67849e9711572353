"""Exposure records: what the gateway showed to which visitor, in which variant, from which snapshot.

The server writes them (``server.exposures``) as Parquet files under
``serving.exposures``; every build reads them into the ``exposures`` table
next to the events, and ``sql/click_through.sql`` attributes the visitors'
later product views to the variants that showed them. The schema lives here
because both sides need it and the engine never imports the server.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from engine.ingest.files import IngestError

SCHEMA = pa.schema(
    [
        ("exposure_id", pa.string()),
        ("ts", pa.timestamp("us")),
        ("visitor", pa.string()),
        ("tenant", pa.string()),
        ("product_id", pa.string()),
        ("experiment", pa.string()),
        ("variant", pa.string()),
        ("algorithm", pa.string()),
        ("snapshot", pa.string()),
        ("shown", pa.list_(pa.string())),
    ]
)


def files(folder: Path) -> list[Path]:
    """The finished exposure files under ``folder`` (a file being written has a leading dot)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))


def checked(folder: Path) -> list[Path]:
    """The finished exposure files under ``folder``, each checked by its footer to have the exposure schema."""
    paths = files(folder)
    for path in paths:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as error:
            msg = f"{path}: not a readable Parquet exposure file ({error})"
            raise IngestError(msg) from None
        if not SCHEMA.equals(schema):
            msg = f"{path}: not an exposure file (schema {schema.to_string(show_schema_metadata=False)!r})"
            raise IngestError(msg)
    return paths


def load(connection: duckdb.DuckDBPyConnection, folder: Path) -> int:
    """Create ``exposures`` from every exposure file under ``folder`` (empty when there are none); return its rows."""
    paths = checked(folder)
    rows = pq.ParquetDataset([str(p) for p in paths], schema=SCHEMA).read() if paths else SCHEMA.empty_table()
    connection.register("exposure_rows", rows)
    connection.execute("CREATE TABLE exposures AS SELECT * FROM exposure_rows ORDER BY ts, exposure_id")
    connection.unregister("exposure_rows")
    return rows.num_rows
