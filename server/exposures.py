"""The gateway's exposure log: queued in memory, written as whole Parquet files by the flush loop.

Writing per request would cost the latency the server is there to save, and
appending to one shared file would let a crash leave a truncated file that
stops the next build. So a request only appends a tuple to a queue (no
clock formatting, no decoding, no lock), and every ``serving.flush_seconds``
(and at shutdown) the flush loop turns what is queued into a Parquet file,
written under a dot-name and then renamed into place: a build sees whole
files only. A crash loses at most the records of the last interval.

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
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.ingest import exposures
from engine.publish.durable import fsync
from server import metrics

log = logging.getLogger("etalage.server")

MAX_QUEUED = 100_000
"""Records a process keeps in memory at most (about 60 MB); past it, new ones are dropped and counted."""
SPILL = ".spill"
"""The folder, inside the exposures folder, that holds records the day's folder could not take yet."""
CHUNK = 512
"""Records converted between two releases of the GIL, so that a large flush does not hold up requests."""


class _Shown(msgspec.Struct):
    """The one field of a served item that the log keeps."""

    product_id: str


_SHOWN = msgspec.json.Decoder(list[list[_Shown]])


class ExposureSpilled(OSError):
    """A flush could not write into the exposures folder; its records wait in the spill folder."""


class ExposureLog:
    """Collects exposure records of one server process and writes them out in batches."""

    def __init__(self, folder: Path, max_queued: int = MAX_QUEUED) -> None:
        self.folder = folder
        self.spill = folder / SPILL
        self.max_queued = max_queued
        self._queue: collections.deque[tuple] = collections.deque()
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
            self._queue.append(
                (exposure_id, time.time(), visitor, tenant, product_id, experiment, variant, algorithm, snapshot, items)
            )
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
        first = dt.datetime.fromtimestamp(records[0][1], dt.UTC)
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

    def _requeue(self, records: list[tuple]) -> None:
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


def _table(records: list[tuple]) -> pa.Table:
    """The records as a table of :data:`engine.ingest.exposures.SCHEMA`, a chunk at a time."""
    batches = []
    for start in range(0, len(records), CHUNK):
        ids, times, visitors, tenants, products, experiments, variants, algorithms, snapshots, items = zip(
            *records[start : start + CHUNK]
        )
        columns = [
            pa.array(ids, pa.string()),
            pa.array((np.array(times) * 1e6).astype(np.int64), pa.timestamp("us")),
            *(
                pa.array(values, pa.string())
                for values in (visitors, tenants, products, experiments, variants, algorithms, snapshots)
            ),
            pa.array(_shown(items), exposures.SCHEMA.field("shown").type),
        ]
        batches.append(pa.RecordBatch.from_arrays(columns, schema=exposures.SCHEMA))
        time.sleep(0)  # hand the GIL to the request thread between chunks
    return pa.Table.from_batches(batches, schema=exposures.SCHEMA)


def _shown(items: tuple[bytes, ...]) -> list[list[str] | None]:
    """The product ids of each answer's items, decoded in one call; an answer that does not decode is None."""
    try:
        lists = _SHOWN.decode(b"[" + b",".join(items) + b"]")
    except msgspec.DecodeError:
        return [_shown_one(answer) for answer in items]
    return [[item.product_id for item in shown] for shown in lists]


def _shown_one(answer: bytes) -> list[str] | None:
    try:
        return [item.product_id for item in _SHOWN.decode(b"[" + answer + b"]")[0]]
    except msgspec.DecodeError:
        log.error("an exposure's items are not the API's JSON (a damaged snapshot?): %r", answer[:200])
        return None
