"""The ledger of ingested event files: which files the stored events came from, so a build reads only new ones.

Each build records, in the warehouse's ``ingested_files`` table, every file
it ingested: its path (relative to the warehouse's folder, so a shop folder
can move; a remote file by its URI), size, modification time (both as the
listing gave them) and fingerprint, and what it held. The
next build reads only the files the ledger does not list. Events are stored
once, so a listed file must stay as it was: one that changed or disappeared
stops the build with its name, because its events can neither be read again
nor be taken back; ``etalage build --full`` starts the store afresh from the
files there are.
"""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from engine.ingest import locations
from engine.ingest.files import CHECK_THREADS, EventFiles, IngestError, fingerprint

TABLE = "ingested_files"
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("format", pa.string()),
        ("bytes", pa.int64()),
        ("modified", pa.timestamp("us")),
        ("fingerprint", pa.string()),
        ("build_id", pa.string()),
        ("events_read", pa.int64()),
        ("dropped_duplicate", pa.int64()),
        ("dropped_corrupt", pa.int64()),
        ("events_kept", pa.int64()),
    ]
)
"""The ``ingested_files`` table: one row per event file a build has ingested."""


@dataclass(frozen=True)
class Listed:
    """What the ledger says of one ingested file."""

    path: str
    bytes: int
    modified: dt.datetime
    fingerprint: str
    build_id: str


def listed(connection: duckdb.DuckDBPyConnection, table: str) -> dict[str, Listed]:
    """The ledger in ``table`` (the previous warehouse's), by path."""
    rows = connection.execute(f"SELECT path, bytes, modified, fingerprint, build_id FROM {table}").fetchall()
    return {row[0]: Listed(*row) for row in rows}


def new_files(found: EventFiles, ledger: dict[str, Listed], folder: Path) -> EventFiles:
    """The files of ``found`` that the ledger does not list.

    Raises:
        IngestError: a listed file changed (its size, or its fingerprint when
            its modification time moved) or is no longer found.
    """
    by_path = {name(path, folder): path for paths in found.by_format().values() for path in paths}
    gone = sorted(set(ledger) - set(by_path))
    if gone:
        entry = ledger[gone[0]]
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        msg = (
            f"{folder / gone[0]}: ingested by build {entry.build_id} but no longer found{more}. Its events are "
            "stored and cannot be told apart from the rest: put the file back, or rebuild from the files "
            "there are with `etalage build --full`"
        )
        raise IngestError(msg)
    for key, entry in sorted(ledger.items()):
        path = by_path[key]
        status = found.listing[path]
        change = None
        if status.size != entry.bytes:
            change = f"{entry.bytes:,} bytes then, {status.size:,} now"
        elif status.modified != entry.modified and fingerprint(path, status.size) != entry.fingerprint:
            change = "its content differs"
        if change:
            msg = (
                f"{path}: changed since build {entry.build_id} ingested it ({change}). Events are ingested once, "
                "so a changed file cannot be read again: restore it, or rebuild everything with `etalage build --full`"
            )
            raise IngestError(msg)
    return EventFiles(
        avro=tuple(p for p in found.avro if name(p, folder) not in ledger),
        parquet=tuple(p for p in found.parquet if name(p, folder) not in ledger),
        listing=found.listing,
    )


def entries(files: EventFiles, counts: list[dict], folder: Path, build_id: str) -> pa.Table:
    """Ledger rows for newly ingested files, with what each held (``sql/file_counts.sql``'s rows)."""
    by_file = {row["filename"]: row for row in counts}
    every = [path for paths in files.by_format().values() for path in paths]
    with ThreadPoolExecutor(CHECK_THREADS) as pool:  # two ranged reads each, a round trip apiece on a store
        prints = dict(
            zip(every, pool.map(lambda path: fingerprint(path, files.listing[path].size), every), strict=True)
        )
    rows = []
    for fmt, paths in files.by_format().items():
        for path in paths:
            status = files.listing[path]
            held = by_file.get(path, {})  # a file without rows has no row in the counts
            rows.append(
                {
                    "path": name(path, folder),
                    "format": fmt,
                    "bytes": status.size,
                    "modified": status.modified,
                    "fingerprint": prints[path],
                    "build_id": build_id,
                    **{
                        key: held.get(key, 0)
                        for key in ("events_read", "dropped_duplicate", "dropped_corrupt", "events_kept")
                    },
                }
            )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def name(path: str, folder: Path) -> str:
    """How the ledger names a file: its path from the warehouse's folder, or its URI."""
    return path if locations.is_remote(path) else os.path.relpath(path, folder)
