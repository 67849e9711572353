"""Exposure records: what the gateway showed to which visitor, in which variant, from which snapshot.

The server writes them (``server.exposures``) as Parquet files under
``serving.exposures``; every build reads them into the ``exposures`` table
next to the events, and ``sql/click_through.sql`` attributes the visitors'
later product views to the variants that showed them. The schema lives here
because both sides need it and the engine never imports the server. A build
may read them from an object store that they are shipped to (the server
itself writes only to a local folder).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from engine.ingest import locations
from engine.ingest.files import CHECK_THREADS, IngestError

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


def files(folder: locations.Location) -> list[str]:
    """The finished exposure files under ``folder`` (a file being written has a leading dot)."""
    found = locations.glob(f"{str(folder).rstrip('/')}/**/*.parquet")
    return [f.path for f in found if not f.path.rsplit("/", 1)[-1].startswith(".")]


def checked(folder: locations.Location) -> list[str]:
    """The finished exposure files under ``folder``, each one's footer checked (in parallel) for the exposure schema."""
    paths = files(folder)
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for path, schema in zip(paths, pool.map(_schema, paths), strict=True):
            if not SCHEMA.equals(schema):
                msg = f"{path}: not an exposure file (schema {schema.to_string(show_schema_metadata=False)!r})"
                raise IngestError(msg)
    return paths


def _schema(path: str) -> pa.Schema:
    try:
        with locations.opened(path) as stream:
            return pq.read_schema(stream)
    except (OSError, pa.ArrowException) as error:
        msg = f"{path}: not a readable Parquet exposure file ({error})"
        raise IngestError(msg) from None


def load(connection: duckdb.DuckDBPyConnection, folder: locations.Location) -> int:
    """Create ``exposures`` from every exposure file under ``folder`` (empty when there are none); return its rows."""
    paths = checked(folder)
    if paths:
        store = locations.filesystem(paths[0])[0]
        inside = [locations.filesystem(path)[1] for path in paths]
        rows = pq.ParquetDataset(inside, schema=SCHEMA, filesystem=store).read()
    else:
        rows = SCHEMA.empty_table()
    connection.register("exposure_rows", rows)
    connection.execute("CREATE TABLE exposures AS SELECT * FROM exposure_rows ORDER BY ts, exposure_id")
    connection.unregister("exposure_rows")
    return rows.num_rows
