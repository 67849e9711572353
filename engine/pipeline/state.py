"""What one build leaves for the next: the ledger, the event batches, the counts, and how they were counted.

With the evaluation on, it also leaves the evaluation's training counts (the
counts of the events before its cut-off) and the cut-off they were counted
to, so that the next build's evaluation changes them by delta too
(``engine.pipeline.evaluation.training_by_delta``).

All of it lives in the warehouse (small tables) and its store (large files,
``engine.publish.store``). A build reads it from the previous warehouse,
which it has attached read-only as ``previous``, and writes the new state
into the warehouse it is building; the one atomic replacement of the
warehouse file makes the new state current. A build that dies leaves the old
state as it was.

How the counts were counted (``counted_with``: the mapping, the event types,
the bot rule, the window, the matrices the computed algorithms need) is part of the state: when the config changes any
of it, the stored counts mean something else, and the build counts again
from scratch, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from engine import sqlfiles
from engine.config import Config
from engine.ingest import ledger
from engine.pipeline import kept_lists
from engine.pipeline.counts import ITEMS, MATRICES, Counts, Kept, matrices
from engine.publish.store import Store
from engine.udfs.pairs import PairRows

FORMAT = 2
"""The layout of the stored state; a warehouse with another (or none) is counted from scratch (2: the follow matrices)."""
TABLES = ("ingested_files", "event_batches", "items", "tenant_sessions", "kept_files", "store_files")
"""The state's tables in the warehouse (``tenant_sessions`` is also one analysts read)."""
BATCHES = pa.schema([("path", pa.string()), ("build_id", pa.string()), ("events", pa.int64())])
KEPT_FILES = pa.schema([("part", pa.string()), ("path", pa.string()), ("rows", pa.int64()), ("checksum", pa.string())])
"""``kept_files``: the store files the counts, the catalogue, the test sessions and the ranked lists are kept in (parts
``<matrix>_base``, ``<matrix>_delta``, ``catalogue``, ``test_sessions``, ``lists``; the training's prefixed)."""
TRAINING = "training_"
"""The prefix of the training counts' tables and ``kept_files`` parts (``training_items``, ``training_pairs_base``, ...)."""
TEST_SESSIONS = "test_sessions"
LISTS = "lists"
"""The ``kept_files`` part of the lists ranked from the counts, beside ``lists_changes`` (``training_``: the training's)."""
"""The ``kept_files`` part of the evaluation's test sessions."""
TRAINING_TABLES = ("training", "training_items", "training_tenant_sessions")
"""The training counts' tables: optional (a build without the evaluation keeps none)."""
STORE_FILES = pa.schema([("build_id", pa.string()), ("path", pa.string())])
KEEP_BUILDS = 3
"""Store files stay while one of this many latest warehouses names them (analysts may hold an older one open)."""


@dataclass(frozen=True)
class Training:
    """The evaluation's training counts: the counts of the events before ``cutoff``."""

    cutoff: dt.datetime
    newest: dt.datetime | None  # the newest event before the cut-off, where the training's look-back window ends
    counts: Counts
    test_sessions: str | None = None  # the store file of the test sessions after the cut-off (sql/test_sessions.sql)
    lists: kept_lists.Files | None = None  # the lists ranked from the counts


@dataclass(frozen=True)
class State:
    """A warehouse's state: enough for the next build to count only what changed."""

    build_id: str
    counted_with: dict[str, Any]
    newest: dt.datetime | None
    ledger: dict[str, ledger.Listed]
    batches: list[str]
    counts: Counts
    catalogue: dict | None  # the kept catalogue: its store path and the sha256 of the file it copies
    training: Training | None  # None: the last build kept no training counts
    lists: kept_lists.Files | None = None  # the lists ranked from the counts


def counted_with(config: Config) -> dict[str, Any]:
    """What the stored counts depend on besides the events and the catalogue."""
    algorithms = config.algorithms
    return {
        "format": FORMAT,
        "mapping": config.events.mapping,
        "event_types": list(algorithms.event_types),
        "max_session_items": algorithms.max_session_items,
        "max_views_per_minute": algorithms.max_views_per_minute,
        "look_back_days": algorithms.look_back_days,
        "sr_window": algorithms.sr_window,
        "matrices": list(matrices(algorithms.compute)),
    }


def load(connection: duckdb.DuckDBPyConnection, store: Store, database: str | None = "previous") -> State | None:
    """The state kept in the warehouse ``database`` (default the previous one, attached; None: the connection's own).

    None if it keeps no state (a first build, or a warehouse from an older etalage).
    """
    name = database or sqlfiles.scalar(connection.execute("SELECT current_database()"))
    present = {
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = $database AND schema_name = 'main'",
            {"database": name},
        ).fetchall()
    }
    database = sqlfiles.quoted(name)
    if not set(TABLES) | {"builds"} <= present:
        return None
    last = connection.execute(
        f"SELECT build_id, counted_with, newest_event FROM {database}.builds "
        "WHERE counted_with IS NOT NULL ORDER BY finished_at DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return None
    kept = {
        row[0]: row[1:]
        for row in connection.execute(f"SELECT part, path, checksum FROM {database}.kept_files").fetchall()
    }
    parts = {part: path for part, (path, _) in kept.items()}
    counted = json.loads(last[1])
    names = counted.get("matrices", MATRICES)  # before algorithms.compute, every build kept them all
    training = None
    if set(TRAINING_TABLES) <= present:
        split = connection.execute(f"SELECT cutoff, newest_event FROM {database}.training").fetchone()
        if split is not None:
            counts = _counts(connection, database, store, parts, names, TRAINING)
            training = Training(split[0], split[1], counts, parts.get(TEST_SESSIONS), _lists(parts, TRAINING))
    return State(
        build_id=last[0],
        counted_with=counted,
        newest=last[2],
        ledger=ledger.listed(connection, f"{database}.ingested_files"),
        batches=[
            row[0] for row in connection.execute(f"SELECT path FROM {database}.event_batches ORDER BY path").fetchall()
        ],
        counts=_counts(connection, database, store, parts, names),
        catalogue={"path": kept["catalogue"][0], "checksum": kept["catalogue"][1]} if "catalogue" in kept else None,
        training=training,
        lists=_lists(parts),
    )


def _lists(parts: dict[str, str], prefix: str = "") -> kept_lists.Files | None:
    """The kept lists' files, as ``kept_files`` names them under ``prefix``."""
    base = parts.get(f"{prefix}{LISTS}")
    return kept_lists.Files(base, parts.get(f"{prefix}{LISTS}_changes")) if base else None


def _counts(
    connection: duckdb.DuckDBPyConnection,
    database: str,
    store: Store,
    parts: dict[str, str],
    names: Iterable[str],
    prefix: str = "",
) -> Counts:
    """The counts kept under ``prefix``: its ``items`` and ``tenant_sessions`` tables, the ``kept_files`` parts of
    the matrices ``names``."""
    items = connection.execute(f"SELECT item, tenant, product_id, sessions FROM {database}.{prefix}items ORDER BY item")
    table = items.to_arrow_table()
    tenants = connection.execute(f"SELECT tenant, sessions FROM {database}.{prefix}tenant_sessions").fetchall()
    return Counts(
        items=table.select(ITEMS.names).cast(ITEMS),
        sessions=table.column("sessions").to_numpy().astype(np.int64),
        tenant_sessions=dict(tenants),
        kept={name: _kept(store, parts, f"{prefix}{name}") for name in names},
    )


def _kept(store: Store, parts: dict[str, str], matrix: str) -> Kept:
    """One matrix as ``kept_files`` names its parts (a part it does not name is empty)."""
    files = {part: parts.get(f"{matrix}_{part}") for part in ("base", "delta")}
    rows = {part: PairRows.load(store.absolute(file)) if file else PairRows.empty() for part, file in files.items()}
    return Kept(rows["base"], rows["delta"], files["base"], files["delta"])


def how_to_count(config: Config, state: State | None, full: bool) -> tuple[str, str | None]:
    """``("incremental", None)``, or ``("full", why)`` (ingest every file again), or ``("recount", why)``.

    ``recount`` keeps the stored events but counts them all again, when only
    the way they are counted changed; ``full`` also ingests every file again.
    """
    if full:
        return "full", "--full"
    if state is None:
        return "full", "the warehouse keeps no counts yet"
    wanted = counted_with(config)
    for key in ("format", "mapping"):
        if state.counted_with.get(key) != wanted[key]:
            what = "events.mapping" if key == "mapping" else "the stored state's format"
            return "full", f"{what} changed since build {state.build_id}"
    for key in ("event_types", "max_session_items", "max_views_per_minute", "look_back_days", "sr_window"):
        if state.counted_with.get(key) != wanted[key]:
            was, now = state.counted_with.get(key), wanted[key]
            return "recount", f"algorithms.{key} changed from {was!r} to {now!r} since build {state.build_id}"
    kept = state.counted_with.get("matrices", list(MATRICES))
    if kept != wanted["matrices"]:
        why = f"algorithms.compute needs the counts {wanted['matrices']}, build {state.build_id} kept {kept}"
        return "recount", why
    return "incremental", None


def write(
    connection: duckdb.DuckDBPyConnection,
    store: Store,
    build_id: str,
    *,
    carried: bool,
    ingested: pa.Table,
    batch: dict | None,
    counts: Counts,
    catalogue: dict,
    itemitem_file: str,
    lists: kept_lists.Files | None = None,
    training: Training | None = None,
) -> Counts:
    """Write the new state's tables into the warehouse being built; return ``counts`` with its files saved.

    ``carried``: the previous warehouse's ledger, batches and store files go
    on (not for a full build). ``batch`` is this build's event batch (path,
    events), if it ingested any file; ``catalogue`` the kept catalogue (its
    store path, checksum and rows); ``lists`` the files of the lists ranked
    from ``counts``; ``training`` the evaluation's training
    counts, if it kept them. Pair counts are saved to the store only when
    they changed.
    """
    counts = counts.saved(store, build_id)
    kept = {"": counts}
    if training is not None:
        kept[TRAINING] = training.counts.saved(store, f"{build_id}-training")
    parts = [
        {"part": f"{prefix}{name}_{part}", "path": path, "rows": rows.pairs, "checksum": None}
        for prefix, each in kept.items()
        for name, matrix in each.kept.items()
        for part, rows, path in (("base", matrix.base, matrix.base_file), ("delta", matrix.delta, matrix.delta_file))
        if path is not None
    ] + [{"part": "catalogue", **catalogue}]
    ranked = {"": lists, TRAINING: training.lists if training else None}
    for part, path in (
        (TEST_SESSIONS, training.test_sessions if training else None),
        *((f"{prefix}{LISTS}", files.base) for prefix, files in ranked.items() if files),
        *((f"{prefix}{LISTS}_changes", files.changes) for prefix, files in ranked.items() if files),
    ):
        if path is not None:
            parts.append({"part": part, "path": path, "rows": None, "checksum": None})
    batches = [dict(row, build_id=build_id) for row in ([batch] if batch else [])]
    named = [row["path"] for row in batches] + [part["path"] for part in parts] + [itemitem_file]
    named = list(dict.fromkeys(named))
    new_rows = {
        "ingested_files": ingested,
        "event_batches": pa.Table.from_pylist(batches, schema=BATCHES),
        "store_files": pa.Table.from_pylist([{"build_id": build_id, "path": p} for p in named], schema=STORE_FILES),
    }
    for name, rows in new_rows.items():
        connection.register("new_rows", rows)
        if carried:
            connection.execute(f"CREATE TABLE {name} AS SELECT * FROM previous.{name} UNION ALL BY NAME FROM new_rows")
        else:
            connection.execute(f"CREATE TABLE {name} AS FROM new_rows")
        connection.unregister("new_rows")
    # The last KEEP_BUILDS builds' files stay named; an older warehouse's files may go.
    connection.execute(
        "DELETE FROM store_files WHERE build_id NOT IN "
        "(SELECT DISTINCT build_id FROM store_files ORDER BY build_id DESC LIMIT $keep)",
        {"keep": KEEP_BUILDS},
    )
    # Batches and counts are named by the current build too: they stay as long as they are used.
    connection.execute(
        "INSERT INTO store_files SELECT $build_id, path FROM event_batches "
        "WHERE path NOT IN (SELECT path FROM store_files WHERE build_id = $build_id)",
        {"build_id": build_id},
    )
    tables = {f"{prefix}{name}": rows for prefix, each in kept.items() for name, rows in _count_tables(each).items()}
    tables["kept_files"] = pa.Table.from_pylist(parts, schema=KEPT_FILES)
    if training is not None:
        tables["training"] = pa.table(
            {"cutoff": [training.cutoff], "newest_event": [training.newest]},
            schema=pa.schema([("cutoff", pa.timestamp("us")), ("newest_event", pa.timestamp("us"))]),
        )
    for name, rows in tables.items():
        connection.register("new_rows", rows)
        connection.execute(f"CREATE TABLE {name} AS FROM new_rows")
        connection.unregister("new_rows")
    return counts


def _count_tables(counts: Counts) -> dict[str, pa.Table]:
    """The ``items`` and ``tenant_sessions`` tables of ``counts``."""
    tenants = sorted(counts.tenant_sessions)
    return {
        "items": counts.items.append_column("sessions", pa.array(counts.sessions, pa.int64())),
        "tenant_sessions": pa.table(
            {
                "tenant": pa.array(tenants, pa.string()),
                "sessions": pa.array([counts.tenant_sessions[t] for t in tenants], pa.int64()),
            }
        ),
    }


def named_files(connection: duckdb.DuckDBPyConnection) -> set[str]:
    """The store files a warehouse (open on ``connection``) keeps: its own and those of the builds before it."""
    return {row[0] for row in connection.execute("SELECT path FROM store_files").fetchall()}
