"""Snapshots: the read-only folders the server serves, published by one atomic switch.

A snapshots root holds::

    <root>/<build_id>/             a published snapshot, never modified afterwards
        itemitem.arrow             Arrow IPC file: the lists this build wrote, each row rendered as the API's JSON
                                   (sql/snapshot_itemitem.sql), with its rank and score
        itemitem.<build_id>.arrow  the same, written by an earlier build and hard-linked in (engine.publish.layout)
        lists.arrow                where each (algorithm, catalogue product)'s list runs in those parts laid end
                                   to end (the manifest's ``itemitem_parts``), and its digest (sql/snapshot_lists.sql)
        products.arrow             the catalogue
        manifest.json              build id, parameters, row counts, sha256 of every file, scores, gate
        _SUCCESS                   written last, for sensors (the talk's Airflow DAG waits on it)
    <root>/current -> <build_id>   the live snapshot: a relative symlink
    <root>/.staging-<build_id>/    a snapshot being written; a leftover is removed by the next build
    <root>/.lock                   held by a build or a rollback

A published snapshot's files and folders are read-only (``0444``, ``0555``):
the server maps them, and a file changed in place would change the bytes it
answers from (it re-checks them in the background all the same).

Why a symlink: ``os.replace`` of a symlink is atomic on POSIX, so a reader
(the server, an Airflow sensor, an analyst's shell) resolves ``current`` to
either the old folder or the new one, never to a mix, and then reads a folder
that never changes. Arrow IPC files are uncompressed so that the server can
memory-map them and read rows without parsing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import errno
import hashlib
import json
import logging
import os
import queue
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.publish import crashpoints, locks
from engine.publish.durable import fsync, writing

FORMAT = 4
"""1: itemitem and products; 2: adds lists.arrow and itemitem's item_json, so servers need no index of their own;
3: itemitem.arrow keeps only what is served (the warehouse has the rest), a third of the bytes to write and hash;
4: the rows are in parts, some linked from earlier snapshots, and identical lists share a run (engine.publish.layout)."""
READABLE_FORMATS = (3, 4)
"""Formats this version verifies and serves (a format 3 snapshot has one part, ``itemitem.arrow``, and no digests)."""
OWN_PART = "itemitem.arrow"
CURRENT = "current"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
STAGING_PREFIX = ".staging-"

log = logging.getLogger("etalage.snapshots")

REQUIRED_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "itemitem.arrow": {"rank": pa.int32(), "distance_score": pa.float64(), "item_json": pa.string()},
    "lists.arrow": {
        "algorithm": pa.string(),
        "tenant": pa.string(),
        "product_id": pa.string(),
        "first_row": pa.int64(),
        "rows": pa.int32(),
    },
    "products.arrow": {"tenant": pa.string(), "product_id": pa.string()},
}
"""Columns the server reads from each table file; the verifier refuses a snapshot without them."""


def parts(manifest: dict) -> list[str]:
    """The files that hold a snapshot's ``item_json`` rows, in the order ``lists.arrow``'s ``first_row`` counts them."""
    return manifest.get("itemitem_parts", [OWN_PART])


def _required(name: str) -> dict[str, pa.DataType]:
    """The columns the file ``name`` must have: every part of the rows those of :data:`OWN_PART`."""
    if name.startswith("itemitem.") and name.endswith(".arrow"):
        name = OWN_PART
    return REQUIRED_COLUMNS.get(name, {})


class NotLinkable(OSError):
    """The snapshots' file system has no hard links (or not between these files): stage without linking."""


UNLINKABLE = (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP)
"""The errors of ``os.link`` that say the file system cannot link, rather than that something is wrong."""


class SnapshotInvalid(RuntimeError):
    """A snapshot folder fails verification: a missing or changed file, a wrong row count or schema."""


@dataclass(frozen=True)
class Snapshot:
    """One published (or staged) snapshot folder and its manifest."""

    path: Path
    manifest: dict

    @property
    def build_id(self) -> str:
        return self.manifest["build_id"]

    @property
    def served_algorithm(self) -> str:
        """The algorithm this snapshot serves by default (see :func:`served_algorithm`)."""
        return served_algorithm(self.manifest)

    def file(self, name: str) -> Path:
        """The path of one of the snapshot's files, such as ``itemitem.arrow``."""
        return self.path / name


UNSCORED = "llr"
"""What a build with ``gate_algorithm = "auto"`` serves when its evaluation scored nothing, and what old manifests served."""


def served_algorithm(manifest: dict) -> str:
    """The algorithm a manifest says its snapshot serves by default (before ``served_algorithm``: the gate's)."""
    return manifest.get("served_algorithm") or (manifest.get("gate") or {}).get("algorithm") or UNSCORED


def locked(root: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the snapshots root's lock: one build or rollback at a time."""
    return locks.exclusive(root / ".lock", f"another build or rollback is publishing to {root}")


def clean(root: Path) -> None:
    """Remove what a killed build left behind: staging folders and a half-made pointer. Hold the lock."""
    if not root.exists():
        return
    for leftover in root.glob(f"{STAGING_PREFIX}*"):
        _remove_tree(leftover, leftover=True)
    (root / f".{CURRENT}.new").unlink(missing_ok=True)


Manifest = dict | Callable[[], dict]
"""A manifest's own fields, or a function that gives them once the files are written (a build decides some late)."""


def stage(
    root: Path,
    build_id: str,
    tables: dict[str, Callable[[], pa.RecordBatchReader]],
    manifest: Manifest,
    folders: dict[str, Path] | None = None,
    linked: dict[str, tuple[Path, dict]] | None = None,
) -> Snapshot:
    """Write ``tables`` and the manifest into a staging folder beside the live snapshot.

    ``tables`` maps a name to a function that opens its rows (from memory,
    not a DuckDB connection's stream: the tables are written at the same
    time, each in a thread of its own, and hashed as they are written).
    ``folders`` maps a subfolder name to a folder of finished files (the
    visual index) that is copied in; its files are checksummed like the rest.
    ``linked`` maps a file name to a published snapshot's file and its
    manifest entry: the file is hard-linked in (never written: it is shared),
    with that entry.

    The manifest gets the format, build id, row counts, schemas and sha256 of
    every file; the folder is verified, and ``_SUCCESS`` is written last.
    Nothing here is visible to readers until :func:`publish`. A ``manifest``
    function is called when the files are written: whatever it raises
    removes the staging folder and is raised here.

    Raises:
        SnapshotInvalid: what was written does not verify.
        DiskFull: the disk filled up (the message names the file); the staging folder is removed.
    """
    staging = root / f"{STAGING_PREFIX}{build_id}"
    _remove_tree(staging, leftover=True)
    staging.mkdir(parents=True)
    with _removed_on_error(staging), writing(staging):
        files = {}
        for name, (source, entry) in (linked or {}).items():
            try:
                os.link(source, staging / name)
            except OSError as error:
                if error.errno not in UNLINKABLE:
                    raise
                raise NotLinkable(f"{staging}: cannot hard-link {source} ({error.strerror})") from error
            files[name] = entry
        with concurrent.futures.ThreadPoolExecutor(len(tables) or 1) as pool:
            written = [
                pool.submit(_write_table, staging / f"{name}.arrow", rows_of) for name, rows_of in tables.items()
            ]
            files |= dict(future.result() for future in written)
        for name, source in (folders or {}).items():
            shutil.copytree(source, staging / name)
            for path in sorted(p for p in (staging / name).rglob("*") if p.is_file()):
                fsync(path)
                files[str(path.relative_to(staging))] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        manifest = {
            "format": FORMAT,
            "build_id": build_id,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **(manifest() if callable(manifest) else manifest),
            "rows": {name.removesuffix(".arrow"): entry["rows"] for name, entry in files.items() if "rows" in entry},
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        fsync(staging / MANIFEST)
        verify(staging, complete=False, checksums=False)  # the sha256s above were just read from these files
        (staging / SUCCESS).touch()
        fsync(staging / SUCCESS)
        _make_read_only(staging)
        fsync(staging)
    return Snapshot(staging, manifest)


def discard(staged: Snapshot) -> None:
    """Remove a staged snapshot that will not be published."""
    _remove_tree(staged.path)


def verify(folder: Path, *, complete: bool = True, checksums: bool = True) -> Snapshot:
    """Check a snapshot folder against its manifest; return it, or raise :class:`SnapshotInvalid`.

    Every listed file must exist with its size and sha256, open as Arrow IPC
    with the recorded schema and row count, and have the columns the server
    reads; lists.arrow must point at the right rows (:func:`_verify_lists`);
    ``complete`` also asks for the ``_SUCCESS`` marker. ``checksums=False``
    skips hashing the files again (staging, which has just hashed them).
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise SnapshotInvalid(f"{folder}: no {MANIFEST}") from None
    except (OSError, ValueError) as error:
        raise SnapshotInvalid(f"{folder / MANIFEST}: unreadable ({error})") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") not in READABLE_FORMATS
        or not isinstance(manifest.get("files"), dict)
    ):
        formats = " or ".join(map(str, READABLE_FORMATS))
        raise SnapshotInvalid(f"{folder / MANIFEST}: not an etalage snapshot manifest of format {formats}")
    listed_parts = parts(manifest)
    if (
        not isinstance(listed_parts, list)
        or not listed_parts
        or any(
            not isinstance(name, str) or not _required(name) or name not in manifest["files"] for name in listed_parts
        )
    ):
        raise SnapshotInvalid(f"{folder / MANIFEST}: itemitem_parts must name itemitem files it lists")
    if complete and not (folder / SUCCESS).exists():
        raise SnapshotInvalid(f"{folder}: no {SUCCESS} marker (the build that wrote it did not finish)")
    for name in REQUIRED_COLUMNS:
        if name not in manifest["files"]:
            raise SnapshotInvalid(f"{folder}: the manifest lists no {name}")
    for name, entry in manifest["files"].items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise SnapshotInvalid(f"{folder / MANIFEST}: lists a file outside the snapshot ({name})")
        verify_file(folder / name, entry, checksums)
    _verify_lists(folder, listed_parts, manifest.get("unlisted_rows", 0))
    return Snapshot(folder, manifest)


def verify_file(path: Path, entry: dict, checksums: bool = True) -> None:
    """Check one file against its manifest ``entry``: size, sha256, and a table's rows, schema and columns."""
    if not path.is_file():
        raise SnapshotInvalid(f"{path}: missing")
    if path.stat().st_size != entry["bytes"]:
        raise SnapshotInvalid(f"{path}: {path.stat().st_size:,} bytes, the manifest says {entry['bytes']:,}")
    if checksums and _sha256(path) != entry["sha256"]:
        raise SnapshotInvalid(f"{path}: sha256 differs from the manifest (the file changed after it was written)")
    if "schema" not in entry:
        return  # not a table: its checksum is the check
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            rows = sum(reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowException, OSError) as error:
        raise SnapshotInvalid(f"{path}: not a readable Arrow IPC file ({error})") from None
    if rows != entry["rows"]:
        raise SnapshotInvalid(f"{path}: {rows:,} rows, the manifest says {entry['rows']:,}")
    if _schema_text(schema) != entry["schema"]:
        raise SnapshotInvalid(f"{path}: schema {_schema_text(schema)} differs from the manifest's {entry['schema']}")
    for column, kind in _required(path.name).items():
        if schema.get_field_index(column) < 0 or schema.field(column).type != kind:
            raise SnapshotInvalid(f"{path}: needs a column {column} of type {kind}")


def read_table(path: Path) -> pa.Table:
    """A snapshot's Arrow file as a table over its memory map: nothing is copied or parsed."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _verify_lists(folder: Path, item_parts: list[str], unlisted_rows: int) -> None:
    """Check that the server can trust lists.arrow's positions and the parts' JSON blindly.

    The server slices ``item_json`` bytes at these positions without looking,
    so every list must be whole and in place. Vectorised Arrow work, a
    fraction of a second for a million lists.
    """
    try:
        rows = pa.concat_tables(read_table(folder / name) for name in item_parts)
        _verify_layout(folder, read_table(folder / "lists.arrow"), read_table(folder / "products.arrow"), rows,
                       unlisted_rows)  # fmt: skip
    except (pa.ArrowException, TypeError, ValueError, IndexError) as error:
        raise SnapshotInvalid(f"{folder}: lists.arrow or itemitem.arrow cannot be checked ({error})") from None


def _verify_layout(folder: Path, lists: pa.Table, products: pa.Table, rows: pa.Table, unlisted_rows: int = 0) -> None:
    """The checks of :func:`_verify_lists`: each failure raises SnapshotInvalid naming what is wrong.

    ``rows`` are the parts laid end to end.

    - no NULLs, and finite scores (the JSON must decode into the API's types);
    - every ``item_json`` ends with the comma the server drops;
    - a lists.arrow row per algorithm and catalogue product, in products.arrow's order;
    - each listed run lies inside the rows;
    - lists that share a start share the whole run, and runs do not overlap;
    - the rows in no run are as many as the manifest's ``unlisted_rows``
      (rows of reused parts whose lists changed since);
    - within each run the ranks go 1, 2, ... up to the run's length.
    """
    lists_file, rows_file = folder / "lists.arrow", folder / OWN_PART
    for table, path in ((lists, lists_file), (rows, rows_file)):
        for column in REQUIRED_COLUMNS[path.name]:  # others may hold NULLs (cooccurrence, for popular)
            if table.column(column).null_count:
                raise SnapshotInvalid(f"{path}: NULLs in {column}")
    if rows.num_rows and not pc.all(pc.is_finite(rows.column("distance_score"))).as_py():
        raise SnapshotInvalid(f"{rows_file}: distance_score has NaN or infinite values, which JSON cannot carry")
    if not all(_ends_with_commas(chunk) for chunk in rows.column("item_json").chunks):
        raise SnapshotInvalid(f"{rows_file}: an item_json value does not end with a comma")
    algorithms = pc.unique(lists.column("algorithm")).to_pylist()
    if lists.num_rows != len(algorithms) * products.num_rows or (rows.num_rows and not algorithms):
        raise SnapshotInvalid(
            f"{lists_file}: {lists.num_rows:,} rows, not one per algorithm ({len(algorithms)}) "
            f"and catalogue product ({products.num_rows:,})"
        )
    for block, algorithm in enumerate(algorithms):
        lists_of = lists.slice(block * products.num_rows, products.num_rows)
        if (
            pc.any(pc.not_equal(lists_of.column("algorithm"), algorithm)).as_py()
            or not lists_of.column("tenant").equals(products.column("tenant"))
            or not lists_of.column("product_id").equals(products.column("product_id"))
        ):
            raise SnapshotInvalid(f"{lists_file}: the {algorithm} block does not follow products.arrow's order")
    count = lists.column("rows").to_numpy().astype(np.int64)
    if np.any(count < 0):
        raise SnapshotInvalid(f"{lists_file}: a negative row count")
    listed = count > 0
    first, count = lists.column("first_row").to_numpy()[listed], count[listed]
    if first.size and (first.min() < 0 or np.any(count > rows.num_rows - first)):
        raise SnapshotInvalid(f"{lists_file}: points outside itemitem.arrow's {rows.num_rows:,} rows")
    starts, where = np.unique(first, return_index=True)
    lengths = count[where]
    if not np.array_equal(lengths[np.searchsorted(starts, first)], count):
        raise SnapshotInvalid(f"{lists_file}: two lists start at one row with different lengths")
    if np.any(starts[1:] < starts[:-1] + lengths[:-1]):
        raise SnapshotInvalid(f"{lists_file}: two lists overlap in itemitem.arrow")
    if rows.num_rows - lengths.sum() != unlisted_rows:
        raise SnapshotInvalid(
            f"{rows_file}: its rows are not exactly the lists of lists.arrow "
            f"({rows.num_rows - lengths.sum():,} rows in no list; the manifest says {unlisted_rows:,})"
        )
    # Ranks start at 1 where a run starts and go up by one to its end (in the ranks' own int32).
    ranks = rows.column("rank").to_numpy()
    edges = np.zeros(rows.num_rows + 1, np.int8)
    edges[starts] = 1
    edges[starts + lengths] -= 1
    inside = np.cumsum(edges[:-1], dtype=np.int8).view(bool)
    inside[starts] = False  # a run's first rank is checked against 1, not against the row before
    if not np.all(ranks[starts] == 1) or np.any((np.diff(ranks) != 1) & inside[1:]):
        raise SnapshotInvalid(f"{lists_file}: a list does not run from rank 1 to its row count in itemitem.arrow")


def _ends_with_commas(column: pa.StringArray) -> bool:
    """Whether every value of ``column`` (no NULLs) ends with a comma: its last byte, read from the offsets."""
    _, offsets, data = column.buffers()
    ends = np.frombuffer(offsets, np.int32, len(column) + 1, column.offset * 4)
    if not len(column):
        return True
    values = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return bool(np.all(ends[1:] > ends[:-1]) and np.all(values[ends[1:] - 1] == ord(",")))


def publish(root: Path, staged: Snapshot) -> Snapshot:
    """Move a staged snapshot into place and make it live with one atomic switch.

    Hold :func:`locked` around staging and publishing.
    """
    final = root / staged.build_id
    os.replace(staged.path, final)
    fsync(root)
    crashpoints.reach("before-switch")
    switch(root, staged.build_id)
    return Snapshot(final, staged.manifest)


def switch(root: Path, build_id: str) -> None:
    """Point ``current`` at ``build_id`` atomically: a new symlink renamed over the old one."""
    pointer = root / f".{CURRENT}.new"
    pointer.unlink(missing_ok=True)
    os.symlink(build_id, pointer)
    os.replace(pointer, root / CURRENT)
    fsync(root)


def pointer_problem(root: Path) -> str | None:
    """What is wrong with ``<root>/current``, in words; None when it is a link to a folder, or absent."""
    pointer = root / CURRENT
    if not pointer.is_symlink():
        if not pointer.exists():
            return None
        return f"{pointer} is a {'folder' if pointer.is_dir() else 'file'}, not a link to a snapshot"
    target = os.readlink(pointer)
    if not (root / target).is_dir():
        return f"{pointer} points at {target}, which does not exist"
    return None


def live(root: Path) -> Snapshot | None:
    """The snapshot ``current`` points at (its manifest read, its files not checked), or None before the first.

    Raises:
        SnapshotInvalid: ``current`` is not a link to a snapshot folder with a readable manifest.
    """
    pointer = root / CURRENT
    if not pointer.is_symlink() and not pointer.exists():
        return None
    problem = pointer_problem(root)
    if problem:
        msg = f"{problem}; `etalage rollback` (or the next build) points it at the newest snapshot that verifies"
        raise SnapshotInvalid(msg)
    folder = root / os.readlink(pointer)
    try:
        return Snapshot(folder, json.loads((folder / MANIFEST).read_text()))
    except (OSError, ValueError) as error:
        raise SnapshotInvalid(f"the live snapshot {folder} has no readable manifest ({error})") from None


def folders(root: Path) -> list[Path]:
    """Every snapshot folder under ``root``, whole or not (not staging, not ``current``), oldest first."""
    if not root.exists():
        return []
    return sorted(f for f in root.iterdir() if f.is_dir() and not f.is_symlink() and not f.name.startswith("."))


def published(root: Path) -> list[Snapshot]:
    """Every complete snapshot under ``root`` (one with ``_SUCCESS``), oldest first."""
    snapshots = []
    for folder in folders(root):
        if (folder / SUCCESS).exists():
            try:
                snapshots.append(Snapshot(folder, json.loads((folder / MANIFEST).read_text())))
            except (OSError, ValueError):
                continue  # listed as broken by `etalage snapshots --verify`, never served
    return snapshots


def newest_valid(root: Path, older_than: str | None = None) -> Snapshot | None:
    """The newest published snapshot that verifies in full (before ``older_than``, a folder name, if given).

    Each one that fails is logged with the reason, newest first, until one passes.
    """
    for candidate in reversed(published(root)):
        if older_than is not None and candidate.path.name >= older_than:
            continue
        try:
            return verify(candidate.path)
        except SnapshotInvalid as error:
            log.warning("skipping snapshot %s: %s", candidate.path.name, error)
    return None


def recover(root: Path) -> str | None:
    """Point a broken ``current`` at the newest snapshot that verifies; return what was done, or None.

    Broken: a dangling link, a file, or a link to a folder without a readable
    manifest. With no snapshot that verifies, the broken pointer is removed,
    so the next build publishes as the first. A folder named ``current`` is
    left alone (etalage never makes one): SnapshotInvalid says to move it.
    Hold :func:`locked`.
    """
    pointer = root / CURRENT
    problem = pointer_problem(root)
    if problem is None:
        try:
            live(root)
            return None
        except SnapshotInvalid as error:
            problem = str(error)
    if pointer.is_dir() and not pointer.is_symlink():
        msg = f"{problem}: move it away (etalage only ever makes {CURRENT} a link)"
        raise SnapshotInvalid(msg)
    good = newest_valid(root)
    if good is None:
        pointer.unlink()
        fsync(root)
        done = f"{problem}: removed it, since no snapshot verifies"
    else:
        switch(root, good.path.name)
        done = f"{problem}: it now points at {good.path.name}, the newest snapshot that verifies"
    log.warning("%s", done)
    return done


def prune(root: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` snapshot folders, never the live one; return the deleted build ids."""
    current = live(root)
    doomed = [f for f in folders(root)[:-keep] if current is None or f.name != current.path.name]
    for folder in doomed:
        _remove_tree(folder)
    return [f.name for f in doomed]


def rollback(root: Path, build_id: str | None = None) -> tuple[Snapshot | None, Snapshot]:
    """Make an earlier snapshot live: ``build_id``, or the newest one older than the live one that verifies.

    With ``current`` broken (dangling, not a link), the default is the newest
    snapshot that verifies. The target is verified in full first. Returns
    (previously live, or None when there was none or it was broken; now live).
    """
    try:
        current = live(root)
    except SnapshotInvalid:
        if (root / CURRENT).is_dir() and not (root / CURRENT).is_symlink():
            raise
        current = None
    if build_id is None:
        target = newest_valid(root, older_than=current.path.name if current else None)
        if target is None:
            than = "older than the live one " if current else ""
            raise SnapshotInvalid(f"{root}: no snapshot {than}verifies, so there is nothing to roll back to")
    else:
        folder = root / build_id
        if "/" in build_id or build_id.startswith(".") or not folder.is_dir():
            raise SnapshotInvalid(f"{root}: no snapshot {build_id!r} (see `etalage snapshots`)")
        target = verify(folder)
    switch(root, target.path.name)
    return current, target


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{field.name} {field.type}" for field in schema)


def _write_table(path: Path, rows_of: Callable[[], pa.RecordBatchReader]) -> tuple[str, dict]:
    """Write one table's rows to ``path`` as an Arrow IPC file, hashing the bytes on their way; its manifest entry."""
    reader = rows_of()
    rows = 0
    with writing(path), open(path, "wb") as handle:
        hashing = _Hashing(handle)
        with pa.PythonFile(hashing, mode="w") as sink, pa.ipc.new_file(sink, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
                crashpoints.reach("snapshot-write")
    fsync(path)
    entry = {"rows": rows, "bytes": path.stat().st_size, "sha256": hashing.digest.hexdigest()}
    return path.name, {**entry, "schema": _schema_text(reader.schema)}


class _Hashing:
    """A binary file that also feeds every byte written to sha256, so a new file is not read back to be hashed.

    The hashing and writing happen in a thread of their own, a few buffers
    behind the caller (sha256 and the write release the GIL), so that the
    next rows are rendered meanwhile. A failed write is raised by the next
    ``write`` or by ``close``.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.closed = False
        self._pending: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._drain, name="snapshot-hashing", daemon=True)
        self._worker.start()

    def _drain(self) -> None:
        while (data := self._pending.get()) is not None:
            if self._error is None:
                try:
                    self.digest.update(data)
                    self.handle.write(data)
                except BaseException as error:  # noqa: BLE001 - raised in the writing thread
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, data: bytes) -> int:
        self._raise()
        self._pending.put(data)
        return len(data)

    def flush(self) -> None:
        self._raise()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._pending.put(None)
            self._worker.join()
        self._raise()
        self.handle.flush()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _removed_on_error(folder: Path) -> Iterator[None]:
    """Remove a staging folder when writing it fails (a crash leaves it to :func:`clean`)."""
    try:
        yield
    except BaseException:
        _remove_tree(folder, leftover=True)
        raise


READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
"""A published file's mode (0444); folders add the search bits (0555)."""
SEARCH = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


def _make_read_only(folder: Path) -> None:
    """Take the write bits off every file and folder of a staged snapshot, innermost first."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        path.chmod(READ_ONLY | SEARCH if path.is_dir() else READ_ONLY)
    folder.chmod(READ_ONLY | SEARCH)


def _remove_tree(folder: Path, *, leftover: bool = False) -> None:
    """Delete a snapshot folder, read-only or not: its folders get their owner's write bit back first.

    ``leftover``: a staging folder being cleaned up after a failure, whose
    removal must not hide that failure; what cannot be removed stays for
    :func:`clean` (as ``shutil.rmtree(ignore_errors=True)`` would leave it).
    """
    try:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(folder)
    except FileNotFoundError:
        return
    except OSError:
        if not leftover:
            raise
