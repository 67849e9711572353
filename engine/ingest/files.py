"""The event files: found by the configured globs, fingerprinted, and checked before anything reads them.

DuckDB reads the files itself (``read_avro``, ``read_parquet``), but it reads
a truncated Avro file up to the break without complaint, and fills a column
that one Parquet file lacks with NULLs. A build that silently loses or nulls
part of an hour of clicks is worse than one that stops, so every file is
checked before it is ingested: Avro files block by block (magic, schema, sync
markers, block lengths), Parquet files by their footer, and all files for
the columns the mapping uses and their types. Any problem raises
:class:`IngestError` naming the file.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import fastavro
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from engine.config import ConfigError, EventSources

FORMATS = ("avro", "parquet")
"""The event file formats, in the order builds read them."""
FINGERPRINT_BYTES = 1 << 16
"""How much of each end of a file its fingerprint reads: Avro's header and sync marker, Parquet's footer."""


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


def fingerprint(path: str, size: int) -> str:
    """A cheap content check of a file: sha256 of its size and of up to 64 KiB at each end.

    Enough to tell a rewritten file from a touched one without reading it
    whole: a Parquet file's footer (schema, row groups, statistics) and an
    Avro file's header and last sync marker lie in those ends.
    """
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as stream:
        digest.update(stream.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            stream.seek(size - FINGERPRINT_BYTES)
        digest.update(stream.read())
    return digest.hexdigest()


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
                columns = parquet_columns(path)
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


def parquet_columns(path: str) -> dict[str, str]:
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises ArrowInvalid/OSError for damaged files
        msg = f"{path}: not a readable Parquet file ({error})"
        raise IngestError(msg) from None
    return {field.name.lower(): str(field.type) for field in schema}
