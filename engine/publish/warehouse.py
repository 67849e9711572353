"""The warehouse file: opened read-only for analysts, replaced whole and atomically by a build.

A build never writes into the live ``warehouse.duckdb``. It writes a fresh
DuckDB file beside it, and only when every step has succeeded does one
``os.replace`` put the new file in its place. A failed or killed build leaves
the live warehouse byte-for-byte as it was (a leftover ``.building`` file is
removed by the next build), and analysts holding the old file open keep
reading a consistent copy. History tables (``builds``) are carried over from
the previous warehouse, which the build has attached read-only as
``previous`` while it runs.

The warehouse itself stays small: what grows with the clickstream lives in
the store beside it (``engine.publish.store``), read through views.

A lock file stops two builds from running at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import duckdb
import sqlglot
from sqlglot import exp

from engine import sqlfiles, udfs
from engine.publish import locks
from engine.publish.durable import fsync

HISTORY_TABLES = ("builds", "evaluation", "tuning")
"""Tables whose rows accumulate across builds; each build copies them forward."""


class WarehouseUnreadable(RuntimeError):
    """The existing warehouse cannot be opened, so its history cannot be carried over."""


def load_extension(connection: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load the DuckDB extension ``name`` from its ``duckdb-extension-<name>`` package, by path: nothing is downloaded."""
    folder = resources.files(f"duckdb_extension_{name}") / "extensions" / f"v{duckdb.__version__}"
    path = str(folder / f"{name}.duckdb_extension")
    # LOAD takes no bound parameters; the path comes from the installed package, not from input.
    connection.execute(f"LOAD '{path.replace(chr(39), chr(39) * 2)}'")


def connect(
    path: Path | str = ":memory:", *, read_only: bool = False, memory_limit: str = ""
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the Avro extension and etalage's UDFs loaded; no network access.

    ``memory_limit`` bounds DuckDB's memory (``warehouse.memory_limit``; "": DuckDB's default); past it, DuckDB
    spills to a folder beside the database file.
    """
    limit = {"memory_limit": memory_limit} if memory_limit else {}
    connection = duckdb.connect(
        str(path),
        read_only=read_only,
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            # Memory DuckDB freed goes back to the system soon, not when 128 MiB more is held: a build's kernels and
            # Arrow tables, which DuckDB's allocator does not serve, then reuse it (docs/benchmarks.md).
            "allocator_flush_threshold": "16MB",
            "allocator_background_threads": True,
            **limit,
        },
    )
    connection.execute("SET enable_progress_bar = false")  # the CLI shows its own progress
    load_extension(connection, "avro")
    udfs.register(connection)
    return connection


def connect_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for an analyst's query: read-only, no files or network but its views' folders, settings locked.

    ``etalage sql`` runs whatever it is given, so the connection must not be
    able to write a file (``COPY ... TO`` the warehouse itself), attach and
    change another database, read ``/etc/passwd``, install an extension or
    turn any of this back on. The folders that the warehouse's own views read
    Parquet from (the store beside it, or a published Spark build's output)
    stay readable, and nothing else. DuckDB matches a relative path against
    ``allowed_directories`` both as written and resolved (against the
    warehouse's folder, ``file_search_path``), so each folder is allowed in
    both forms; a path with ``..`` is not allowed at all. The order matters:
    once external access is off, ``allowed_directories`` can no longer be set,
    and neither can be passed to ``duckdb.connect``.
    """
    folder = path.resolve().parent
    connection = connect(path, read_only=True)
    allowed = []
    for read in _view_folders(connection):
        allowed.append(f"{read}/")
        if "://" not in read and not Path(read).is_absolute():
            allowed.append(f"{folder / read}/")
    connection.execute("SET file_search_path = $folder", {"folder": str(folder)})
    connection.execute("SET allowed_directories = $allowed", {"allowed": allowed})
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def _view_folders(connection: duckdb.DuckDBPyConnection) -> set[str]:
    """The folders of the Parquet files the warehouse's views read, as the views name them (none with ``..``)."""
    folders = set()
    for (text,) in connection.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall():
        for reader in sqlglot.parse_one(text, read="duckdb").find_all(exp.ReadParquet):
            for literal in reader.find_all(exp.Literal):
                name = literal.this
                if literal.is_string and ".." not in name.split("/"):
                    folders.add(name[: name.rfind("/", 0, _first_wildcard(name))] or "/")
    return folders


def _first_wildcard(name: str) -> int:
    found = [name.find(char) for char in "*?[{" if char in name]
    return min(found, default=len(name))


@contextlib.contextmanager
def rebuild(path: Path, memory_limit: str = "") -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection to a new, empty warehouse that replaces ``path`` when the block succeeds.

    ``memory_limit``: DuckDB's, as :func:`connect` takes it.

    Raises:
        locks.Busy: another build is running on the same warehouse.
        WarehouseUnreadable: ``path`` exists but is not a readable DuckDB file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        building = path.with_name(f".{path.name}.building")
        _remove(building)
        try:
            connection = connect(building, memory_limit=memory_limit)
        except BaseException:
            _remove(building)  # a full disk fails the new file's first write
            raise
        try:
            if path.exists():
                _attach_previous(connection, path)
                _carry_history(connection)
        except BaseException:
            connection.close()
            _remove(building)
            raise
        yield from _replace_on_success(connection, building, path)


def _attach_previous(connection: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the live warehouse read-only as ``previous``, for the build to read its history and state.

    Raises:
        WarehouseUnreadable: ``path`` exists but is not a readable DuckDB file.
    """
    try:
        # ATTACH takes no bound parameters; the path is the configured warehouse, quoted.
        connection.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS previous (READ_ONLY)")
    except duckdb.Error as error:
        msg = f"{path} exists but cannot be opened as a DuckDB warehouse ({error}); move it away to start afresh"
        raise WarehouseUnreadable(msg) from None


def _carry_history(connection: duckdb.DuckDBPyConnection) -> None:
    """Copy the history tables of the ``previous`` warehouse into ``connection``'s new one.

    Each table is created by its own ``CREATE TABLE`` statement (types and
    constraints as they were; JSON stays JSON) and filled inside DuckDB,
    without passing through Python.
    """
    definitions = dict(
        connection.execute(
            "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = 'previous' AND schema_name = 'main'"
        ).fetchall()
    )
    for table in HISTORY_TABLES:
        if table in definitions:
            connection.execute(definitions[table])  # its own CREATE TABLE: types and NOT NULL kept
            connection.execute(f"INSERT INTO main.{table} SELECT * FROM previous.main.{table}")


def export(path: Path, target: Path) -> None:
    """Write a self-contained copy of the warehouse at ``path`` to ``target``: every view made a table.

    For a warehouse that travels without its store (the bundled example),
    to be opened by any DuckDB. Rows keep the order their views give.
    """
    target.unlink(missing_ok=True)
    with connect() as connection:
        # ATTACH takes no bound parameters; both paths are the caller's, quoted.
        connection.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS source (READ_ONLY)")
        connection.execute(f"ATTACH '{str(target).replace(chr(39), chr(39) * 2)}' AS export")
        names = connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'source' AND schema_name = 'main' "
            "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = 'source' "
            "AND schema_name = 'main' AND NOT internal ORDER BY 1"
        ).fetchall()
        for (name,) in names:
            table = sqlfiles.quoted(name)
            connection.execute(f"CREATE TABLE export.main.{table} AS FROM source.main.{table}")
        connection.execute("DETACH export")


@contextlib.contextmanager
def amend(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection to a copy of the warehouse that replaces it when the block succeeds.

    For commands that add rows (``etalage tune``) without rebuilding: the live
    file is never opened for writing, so readers and a crash are safe as with
    :func:`rebuild`.
    """
    if not path.exists():
        msg = f"{path} does not exist; run `etalage build` first"
        raise WarehouseUnreadable(msg)
    with _locked(path):
        building = path.with_name(f".{path.name}.building")
        _remove(building)
        shutil.copyfile(path, building)
        try:
            connection = connect(building)
        except duckdb.Error as error:
            _remove(building)
            msg = f"{path} cannot be opened as a DuckDB warehouse ({error})"
            raise WarehouseUnreadable(msg) from None
        yield from _replace_on_success(connection, building, path)


def _replace_on_success(
    connection: duckdb.DuckDBPyConnection, building: Path, path: Path
) -> Iterator[duckdb.DuckDBPyConnection]:
    try:
        yield connection
        if sqlfiles.scalar(
            connection.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'previous'")
        ):
            connection.execute("DETACH previous")
        connection.execute("CHECKPOINT")
        connection.close()
        fsync(building)
        os.replace(building, path)
        fsync(path.parent)
    except BaseException:
        connection.close()
        _remove(building)
        raise


def _locked(path: Path) -> contextlib.AbstractContextManager[None]:
    return locks.exclusive(path.with_name(path.name + ".lock"), "another build is running on this warehouse")


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def append_history(connection: duckdb.DuckDBPyConnection, history: str, rows: str) -> None:
    """Add the rows of table ``rows`` to the history table ``history``, creating it on the first build."""
    exists = sqlfiles.scalar(
        connection.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = $name AND schema_name = 'main'", {"name": history}
        )
    )
    if exists:
        # A warehouse written by an older etalage may lack columns added since: add them (old rows get NULL).
        present = {row[0] for row in connection.execute(f"DESCRIBE {history}").fetchall()}
        for name, kind, *_ in connection.execute(f"DESCRIBE {rows}").fetchall():
            if name not in present:
                connection.execute(f"ALTER TABLE {history} ADD COLUMN {sqlfiles.quoted(name)} {kind}")
        connection.execute(f"INSERT INTO {history} BY NAME SELECT * FROM {rows}")
    else:
        connection.execute(f"CREATE TABLE {history} AS SELECT * FROM {rows}")
