"""The event files: found by the configured globs, fingerprinted, and checked before anything reads them.

DuckDB reads the files itself (``read_avro``, ``read_parquet``), but it reads
a truncated Avro file up to the break without complaint, and fills a column
that one Parquet file lacks with NULLs. A build that silently loses or nulls
part of an hour of clicks is worse than one that stops, so every file is
checked before it is ingested, by its ends only (a file on an object store
is never read whole for this): an Avro file's header (magic, schema, sync
marker) and its last bytes, which must be that sync marker, a Parquet
file's footer, and all files for the columns the mapping uses and their
types. The checks run in a thread pool, because a remote file's ends are two
round trips each. Any problem raises :class:`IngestError` naming the file.

Event files laid out in ``date=YYYY-MM-DD[/hour=HH]`` partitions are pruned
by path before anything reads them when the look-back window leaves them out
(:func:`window_floor`, :func:`prune`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import fastavro
import fastavro.read
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from engine.config import Algorithms, ConfigError, Evaluation, EventSources, MappedColumn
from engine.ingest import locations

FORMATS = ("avro", "parquet")
"""The event file formats, in the order builds read them."""
FINGERPRINT_BYTES = 1 << 16
"""How much of each end of a file its fingerprint reads: Avro's header and sync marker, Parquet's footer."""
MAGIC = b"Obj\x01"
"""The first bytes of every Avro container file."""
CHECK_THREADS = 16
"""Files checked at once: each check waits on a store's round trips far more than on a core."""
PARTITION = re.compile(r"/date=(\d{4}-\d{2}-\d{2})(?:/hour=(\d{2}))?/")
"""A Hive-style date (and hour) partition in a file's path."""


class IngestError(RuntimeError):
    """An event or catalogue file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class EventFiles:
    """The files each configured glob matched, in a stable order."""

    avro: tuple[str, ...]
    parquet: tuple[str, ...]
    listing: dict[str, locations.FileInfo] = field(default_factory=dict, compare=False, repr=False)
    """Each file's size and modification time, as the listing that found it gave them."""

    def by_format(self) -> dict[str, tuple[str, ...]]:
        """Non-empty formats only."""
        return {name: files for name, files in (("avro", self.avro), ("parquet", self.parquet)) if files}

    def __len__(self) -> int:
        return len(self.avro) + len(self.parquet)


def find(sources: EventSources) -> EventFiles:
    """Expand the configured globs; a glob that matches no file is an error, not an empty source."""
    found: dict[str, list[str]] = {"avro": [], "parquet": []}
    listing: dict[str, locations.FileInfo] = {}
    for name, patterns in (("avro", sources.avro), ("parquet", sources.parquet)):
        for pattern in patterns:
            matches = locations.glob(pattern)
            if not matches:
                msg = f"no event files match {pattern} (events.{name}); is the collector writing there?"
                raise IngestError(msg)
            found[name].extend(match.path for match in matches)
            listing.update((match.path, match) for match in matches)
    return EventFiles(
        avro=tuple(dict.fromkeys(found["avro"])), parquet=tuple(dict.fromkeys(found["parquet"])), listing=listing
    )


def fingerprint(path: str, size: int) -> str:
    """A cheap content check of a file: sha256 of its size and of up to 64 KiB at each end.

    Enough to tell a rewritten file from a touched one without reading it
    whole: a Parquet file's footer (schema, row groups, statistics) and an
    Avro file's header and last sync marker lie in those ends.
    """
    digest = hashlib.sha256(str(size).encode())
    with locations.opened(path) as stream:
        digest.update(stream.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            stream.seek(size - FINGERPRINT_BYTES)
        digest.update(stream.read())
    return digest.hexdigest()


def window_floor(found: EventFiles, algorithms: Algorithms, evaluation: Evaluation) -> dt.datetime | None:
    """The earliest moment whose events a build can count, judged by the partitions in the files' paths.

    None (read every file) without a look-back window, or when a file has no
    date partition in its path. Each partition's files are taken to hold its
    date's (or hour's) events, so the newest event is at least as new as the
    newest partition's start, and the newest before the evaluation's cut-off
    at least as new as the start of the last partition that ends before it:
    the windows of the published and the evaluated lists both begin after
    those, less ``look_back_days``.
    """
    partitions = [_partition(path) for paths in found.by_format().values() for path in paths]
    spans = [span for span in partitions if span is not None]
    if not algorithms.look_back_days or not spans or len(spans) < len(partitions):
        return None
    newest = max(start for start, _ in spans)
    earliest = newest
    if evaluation.enabled:
        split = evaluation.cutoff or newest - dt.timedelta(days=evaluation.test_days)
        before = [start for start, end in spans if end <= split]
        if not before:
            return None
        earliest = min(newest, max(before))
    return earliest - dt.timedelta(days=algorithms.look_back_days)


def prune(files: EventFiles, floor: dt.datetime | None) -> EventFiles:
    """The files whose partition may hold events at or after ``floor`` (all of them when None)."""
    if floor is None:
        return files

    def kept(paths: Iterable[str]) -> tuple[str, ...]:
        return tuple(path for path in paths if (span := _partition(path)) is None or span[1] > floor)

    return EventFiles(avro=kept(files.avro), parquet=kept(files.parquet), listing=files.listing)


def _partition(path: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The span of time a file's ``date=``/``hour=`` partition covers, or None when its path has none."""
    match = PARTITION.search(path.replace("\\", "/"))
    if not match:
        return None
    start = dt.datetime.fromisoformat(match[1]) + dt.timedelta(hours=int(match[2] or 0))
    return start, start + dt.timedelta(hours=1 if match[2] else 24)


def mapping_columns(mapping: dict[MappedColumn, str]) -> dict[str, set[str]]:
    """For each mapped column, the source columns its expression reads (lower case).

    Raises:
        ConfigError: an expression is not valid SQL.
    """
    needed: dict[str, set[str]] = {}
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


def check(
    files: EventFiles, mapping: dict[MappedColumn, str], progress: Callable[[str], None] = lambda name: None
) -> None:
    """Check every file's integrity and shape against the mapping, by its ends, several files at once.

    ``progress`` is called once per file checked. The first bad file in the
    files' order is reported, whichever check finished first.
    """
    needed = mapping_columns(mapping)
    required = set().union(*needed.values())
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        for fmt, paths in files.by_format().items():
            reader = _avro_columns if fmt == "avro" else parquet_columns
            reference: tuple[str, dict[str, str]] | None = None
            for path, columns in zip(paths, pool.map(reader, paths), strict=True):
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


def _avro_columns(path: str) -> dict[str, str]:
    """An Avro container file's column types, from its header; its last bytes must be the header's sync marker.

    Every block ends with the sync marker, so a file cut anywhere but
    between two blocks ends with something else.
    """
    head = b""
    try:
        with locations.opened(path) as stream:
            head = stream.read(FINGERPRINT_BYTES)
            if head[:4] != MAGIC:
                msg = f"{path}: not a readable Avro container file (it does not start with Avro's magic bytes)"
                raise IngestError(msg)
            header = cast(
                dict[str, Any], fastavro.schemaless_reader(io.BytesIO(head), fastavro.read.HEADER_SCHEMA, None)
            )
            stream.seek(-len(header["sync"]), io.SEEK_END)
            tail = stream.read()
    except (locations.Unreachable, FileNotFoundError, IngestError):
        raise
    except EOFError:
        msg = (
            f"{path}: truncated Avro file (it ends inside its header)"
            if len(head) < FINGERPRINT_BYTES
            else f"{path}: Avro header longer than the {FINGERPRINT_BYTES:,} bytes etalage reads"
        )
        raise IngestError(msg) from None
    except Exception as error:  # noqa: BLE001 - fastavro raises many types for a damaged header
        msg = f"{path}: not a readable Avro container file ({type(error).__name__}: {error})"
        raise IngestError(msg) from None
    if tail != header["sync"]:
        msg = f"{path}: truncated Avro file (it does not end with its sync marker)"
        raise IngestError(msg)
    schema = json.loads(header["meta"]["avro.schema"])
    if not isinstance(schema, dict) or schema.get("type") != "record":
        msg = f"{path}: Avro schema is not a record"
        raise IngestError(msg)
    return {field["name"].lower(): _avro_type(field["type"]) for field in schema["fields"]}


def _avro_type(avro_type: object) -> str:
    if isinstance(avro_type, list):
        return " | ".join(sorted(_avro_type(t) for t in avro_type if t != "null"))
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type.get("type"))
    return str(avro_type)


def parquet_columns(path: locations.Location) -> dict[str, str]:
    """A Parquet file's column types (lower-case names), from its footer alone."""
    try:
        with locations.opened(path) as stream:
            schema = pq.read_schema(stream)
    except (locations.Unreachable, FileNotFoundError):
        raise
    except Exception as error:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for damaged files
        msg = f"{path}: not a readable Parquet file ({error})"
        raise IngestError(msg) from None
    return {field.name.lower(): str(field.type) for field in schema}
