"""The gateway's exposure log: buffered in memory, flushed as whole Parquet files.

Writing per request would cost the latency the server is there to save, and
appending to one shared file would let a crash leave a truncated file that
stops the next build. So each process keeps its records in memory and every
``serving.flush_seconds`` (and at shutdown) writes them as a new Parquet file
under a dot-name, then renames it into place: a build sees whole files only.
A crash loses at most the records of the last interval, never a file.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.ingest import exposures
from engine.publish.durable import fsync


class ExposureLog:
    """Collects exposure records of one server process and writes them out in batches."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._name = f"{socket.gethostname()}-{os.getpid()}"

    def append(
        self,
        visitor: str,
        tenant: str,
        product_id: str,
        experiment: str,
        variant: str,
        algorithm: str,
        snapshot: str,
        shown: list[str],
    ) -> str:
        """Record one answer of the gateway; return its exposure id."""
        exposure_id = uuid.uuid4().hex
        row = {
            "exposure_id": exposure_id,
            "ts": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
            "visitor": visitor,
            "tenant": tenant,
            "product_id": product_id,
            "experiment": experiment,
            "variant": variant,
            "algorithm": algorithm,
            "snapshot": snapshot,
            "shown": shown,
        }
        with self._lock:
            self._rows.append(row)
        return exposure_id

    def flush(self) -> Path | None:
        """Write the records collected so far to a new file; return it (None when there were none)."""
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return None
        day = rows[0]["ts"].date()
        folder = self.folder / f"date={day:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"exposures-{self._name}-{rows[0]['ts']:%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        partial = folder / f".{name}"
        pq.write_table(pa.Table.from_pylist(rows, schema=exposures.SCHEMA), partial)
        fsync(partial)
        os.replace(partial, folder / name)
        return folder / name
