"""The gateway's exposure log: queued in memory, written as whole Parquet files by the flush loop.

Writing per request would cost the latency the server is there to save, and
appending to one shared file would let a crash leave a truncated file that
stops the next build. So a request only appends one line of JSON to a queue
(one msgspec call: the items go in as the bytes that were sent), and every
``serving.flush_seconds`` (and at shutdown) the flush loop hands the lines to
Arrow's JSON reader, which parses them on its own threads without the GIL,
and writes the table as a Parquet file under a dot-name, then renames it
into place: a build sees whole files only. A crash loses at most the records
of the last interval. (Converting the records in Python instead held the GIL
long enough to add tens of milliseconds to the gateway's p99.)

Memory is bounded: the queue holds at most :data:`MAX_QUEUED` records. When
the folder cannot be written (a file where the day's folder should be, a
permission), the records are spilled to a dot-file under ``.spill/`` in the
exposures folder and renamed into place by a later flush that can write
there, so a failing folder costs disk, not memory. Only when the spill fails
too (a full disk) do records wait in the queue, and past its bound they are
dropped and counted (``etalage_exposures_dropped_total``).
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from engine.ingest import exposures
from engine.publish.durable import fsync
from server import metrics

log = logging.getLogger("etalage.server")

MAX_QUEUED = 100_000
"""Records a process keeps in memory at most (about 50 MB of JSON lines); past it, new ones are dropped and counted."""
SPILL = ".spill"
"""The folder, inside the exposures folder, that holds records the day's folder could not take yet."""


class _Record(msgspec.Struct):
    """One exposure as a line of JSON, in :data:`engine.ingest.exposures.SCHEMA`'s order; ``ts`` in µs since 1970.

    ``shown`` is last, so the record before it can be read back alone when
    its bytes are not JSON (an encoded string never holds ``,"shown":``).
    """

    exposure_id: str
    ts: int
    visitor: str
    tenant: str
    product_id: str
    experiment: str
    variant: str
    algorithm: str
    snapshot: str
    shown: msgspec.Raw


class _Head(msgspec.Struct):
    """A :class:`_Record` without its items."""

    exposure_id: str
    ts: int
    visitor: str
    tenant: str
    product_id: str
    experiment: str
    variant: str
    algorithm: str
    snapshot: str


_ENCODE = msgspec.json.Encoder().encode
EPOCH = dt.datetime(1970, 1, 1)
_SHOWN = b',"shown":'
_ITEM = pa.struct([("product_id", pa.string())])
_PARSE = pajson.ParseOptions(
    explicit_schema=pa.schema(
        [
            (f.name, pa.int64() if f.name == "ts" else pa.list_(_ITEM) if f.name == "shown" else f.type)
            for f in exposures.SCHEMA
        ]
    ),
    unexpected_field_behavior="ignore",  # each item's rank and score
)
_ONE_THREAD = pajson.ReadOptions(use_threads=False)
"""Parse on the flush's own thread: a pool would compete with the request thread for the cores, not for the GIL."""


class ExposureSpilled(OSError):
    """A flush could not write into the exposures folder; its records wait in the spill folder."""


class ExposureLog:
    """Collects exposure records of one server process and writes them out in batches."""

    def __init__(self, folder: Path, max_queued: int = MAX_QUEUED) -> None:
        self.folder = folder
        self.spill = folder / SPILL
        self.max_queued = max_queued
        self._queue: collections.deque[bytes] = collections.deque()
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()
        self._name = f"{socket.gethostname()}-{os.getpid()}"
        self._flushing = threading.Lock()

    def append(
        self,
        visitor: str,
        tenant: str,
        product_id: str,
        experiment: str,
        variant: str,
        algorithm: str,
        snapshot: str,
        items: bytes,
    ) -> str:
        """Queue one answer of the gateway (``items`` as the JSON it sent); return its exposure id.

        The id is this process's random prefix and a counter: unique without
        asking the kernel for randomness on every request.
        """
        exposure_id = f"{self._prefix}{next(self._count):016x}"
        if len(self._queue) >= self.max_queued:
            metrics.EXPOSURES_DROPPED.inc()
        else:
            ts = time.time_ns() // 1000
            record = _Record(
                exposure_id,
                ts,
                visitor,
                tenant,
                product_id,
                experiment,
                variant,
                algorithm,
                snapshot,
                msgspec.Raw(items),
            )
            self._queue.append(_ENCODE(record))
        return exposure_id

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self) -> Path | None:
        """Write the queued records to a new file, and move spilled ones into place; return the new file.

        Raises:
            ExposureSpilled: the exposures folder cannot be written; the records are in the spill folder.
            OSError: neither can the spill folder; the records stay queued (up to the bound).
        """
        with self._flushing:
            written = self._write_queued()
            self._deliver_spilled()
            return written

    def _write_queued(self) -> Path | None:
        records = [self._queue.popleft() for _ in range(len(self._queue))]
        if not records:
            return None
        table = _table(records)
        first = table.column("ts")[0].as_py()
        day = f"date={first:%Y-%m-%d}"
        name = f"exposures-{self._name}-{first:%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        target = self.folder / day / name
        try:
            _write_whole(table, target)
            return target
        except OSError as error:
            spilled = self.spill / day / f".{name}"
            try:
                _write_whole(table, spilled)
            except OSError as failed:
                self._requeue(records)
                msg = f"cannot write {target} ({error}) nor spill it to {spilled} ({failed}); the records stay queued"
                raise OSError(msg) from error
            msg = f"cannot write {target} ({error}); its {len(records):,} records wait in {spilled}"
            raise ExposureSpilled(msg) from error

    def _requeue(self, records: list[bytes]) -> None:
        """Put records that could not be written back at the front of the queue, as many as the bound allows."""
        room = max(self.max_queued - len(self._queue), 0)
        kept = records[len(records) - room :] if room < len(records) else records
        self._queue.extendleft(reversed(kept))
        if len(kept) < len(records):
            metrics.EXPOSURES_DROPPED.inc(len(records) - len(kept))
            log.error(
                "dropped %d exposure records: nowhere to write them and the queue is full", len(records) - len(kept)
            )

    def _deliver_spilled(self) -> None:
        """Rename spilled files into their day's folder (another worker may have moved one already)."""
        for spilled in sorted(self.spill.glob("date=*/.exposures-*.parquet")):
            target = self.folder / spilled.parent.name / spilled.name[1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(spilled, target)
            except FileNotFoundError:
                continue
            fsync(target.parent)
            log.info("moved spilled exposures %s into place", target)


def _write_whole(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a dot-name and a rename, so that nobody reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name.lstrip('.')}.partial")
    try:
        pq.write_table(table, partial)
        fsync(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    fsync(path.parent)


def _table(records: list[bytes]) -> pa.Table:
    """The records as a table of :data:`engine.ingest.exposures.SCHEMA`, parsed by Arrow without the GIL."""
    lines = b"\n".join(records)
    try:
        parsed = pajson.read_json(pa.BufferReader(lines), _ONE_THREAD, _PARSE)
    except pa.ArrowInvalid:
        return _table_line_by_line(records)
    shown = parsed.column("shown").combine_chunks()
    columns = {
        **{name: parsed.column(name) for name in parsed.column_names},
        "ts": parsed.column("ts").cast(pa.timestamp("us")),
        "shown": pa.ListArray.from_arrays(shown.offsets, shown.values.field("product_id")),
    }
    return pa.table([columns[f.name] for f in exposures.SCHEMA], schema=exposures.SCHEMA)


def _table_line_by_line(records: list[bytes]) -> pa.Table:
    """:func:`_table` for records of which some do not parse: each is kept, with no ``shown`` where its items are not JSON.

    A snapshot damaged in place can serve bytes that are not JSON; the
    gateway logs what it sent without looking, so this is where they show.
    """
    rows = []
    for record in records:
        row: _Record | _Head
        try:
            row = msgspec.json.decode(record, type=_Record)
            shown = [item["product_id"] for item in msgspec.json.decode(row.shown)]
        except (msgspec.DecodeError, TypeError, KeyError):
            log.error("an exposure's items are not the API's JSON (a damaged snapshot?): %r", record[:300])
            row, shown = msgspec.json.decode(record[: record.index(_SHOWN)] + b"}", type=_Head), None
        ts = EPOCH + dt.timedelta(microseconds=row.ts)
        rows.append({**msgspec.structs.asdict(row), "ts": ts, "shown": shown})
    return pa.Table.from_pylist(rows, schema=exposures.SCHEMA)
