"""The product catalogue: one Parquet file, loaded into ``products`` when it changed.

Only catalogue products get lists (a product id garbled in a URL or a
delisted product never becomes a recommendation), so a duplicate or a
missing key is refused with the file's name. A build keeps a copy in the
store and loads the file again only when its checksum changed. The file may
be on an object store (``engine.ingest.locations``).
"""

from __future__ import annotations

import hashlib

import duckdb

from engine.ingest import locations
from engine.ingest.files import IngestError, parquet_columns

CATALOGUE_COLUMNS = ("tenant", "product_id", "title", "brand", "category", "colour", "price", "image")
"""The catalogue's columns; ``tenant`` and ``product_id`` are required, the rest may be absent."""


def checksum(path: locations.Location) -> str:
    """The catalogue file's sha256 (a catalogue is small; any edit must show)."""
    try:
        with locations.opened(path) as stream:
            return hashlib.sha256(stream.read()).hexdigest()
    except FileNotFoundError:
        raise _missing(path) from None


def load_catalogue(connection: duckdb.DuckDBPyConnection, path: locations.Location) -> None:
    """Create the temporary table ``products`` from the catalogue Parquet file, refusing duplicates and missing keys."""
    try:
        columns = parquet_columns(path)
    except FileNotFoundError:
        raise _missing(path) from None
    for required in ("tenant", "product_id"):
        if required not in columns:
            msg = f"{path}: catalogue has no column {required!r}"
            raise IngestError(msg)
    selected = ", ".join(
        f"CAST({c if c in columns else 'NULL'} AS {'DOUBLE' if c == 'price' else 'VARCHAR'}) AS {c}"
        for c in CATALOGUE_COLUMNS
    )
    with locations.duckdb_reads(connection, [path]):
        connection.execute(
            f"CREATE OR REPLACE TEMPORARY TABLE products AS SELECT {selected} FROM read_parquet($path)",
            {"path": str(path)},
        )
    duplicate = connection.execute(
        "SELECT tenant, product_id FROM products GROUP BY ALL HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if duplicate:
        msg = f"{path}: product {duplicate[1]!r} appears more than once for tenant {duplicate[0]!r}"
        raise IngestError(msg)


def _missing(path: locations.Location) -> IngestError:
    return IngestError(f"{path}: catalogue file does not exist (catalogue.path)")
