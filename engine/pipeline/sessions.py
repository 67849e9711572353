"""Which sessions a build counts again, and the products each counted for before and counts for now.

What a session counts for (``sql/session_items.sql``) depends on its events,
on the catalogue, on the look-back window and on the bot rule. A build finds
the sessions for which any of these changed (``sql/changed_sessions.sql``:
new events, a window that moved past some of their events, a catalogue
product added or removed), reads ``session_items.sql`` over just their
events twice, as the last build did and as this one does, and hands the two
to ``engine.pipeline.counts`` as ``counted_changes``: the old rows with sign
-1, the new ones with +1 (and their steps, ``sql/session_steps.sql``, as
``counted_steps``). The evaluation uses the same two readings for the
sessions its training leaves out or cuts short (``sql/holdout_sessions.sql``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import duckdb

from engine import sqlfiles
from engine.config import Algorithms

COUNTED_COLUMNS = ("tenant", "session_id", "product_id")
"""The columns of ``session_items`` that counting reads (not ``first_seen``): what its tables hold."""


@dataclass(frozen=True)
class Counting:
    """One reading of ``sql/session_items.sql``: which events, which catalogue, which parameters."""

    events: str  # the name of a table or view
    products: str
    parameters: dict[str, Any]


def parameters(algorithms: Algorithms, until: dt.datetime | None, newest: dt.datetime | None) -> dict[str, Any]:
    """The values ``sql/session_items.sql`` binds: the algorithms' event types, window and bot rule, and the time range."""
    return {**algorithms.parameters(), "until": until, "newest": newest}


def newest(connection: duckdb.DuckDBPyConnection, until: dt.datetime | None = None) -> dt.datetime | None:
    """The newest event before ``until`` (of all events when None), where the look-back window ends."""
    return sqlfiles.scalar(sqlfiles.query(connection, "newest_event", {"until": until}))


def window_start(newest_event: dt.datetime | None, look_back_days: int) -> dt.datetime | None:
    """The first moment the look-back window counts (None: no window, or no events yet)."""
    if not look_back_days or newest_event is None:
        return None
    return newest_event - dt.timedelta(days=look_back_days)


def count_changes(
    connection: duckdb.DuckDBPyConnection, before: Counting | None, after: Counting, *, steps: bool = True
) -> None:
    """Create the temporary views ``counted_changes`` and ``counted_steps``: ``before``'s with sign -1, ``after``'s with +1.

    ``counted_changes`` holds the session items, ``counted_steps`` the
    sessions' steps (``sql/session_steps.sql``, read from the same session
    items; only with ``steps``, which counts that keep no follow matrix do
    not read). ``before`` is None when nothing was counted before (a first
    build, or one that counts everything again).
    """
    for suffix, counting in (("after", after), ("before", before)):
        items, ordered = f"counted_{suffix}", f"steps_{suffix}"
        if counting is None:
            connection.execute(f"CREATE OR REPLACE TEMPORARY TABLE {items} AS FROM counted_after LIMIT 0")
            if steps:
                connection.execute(f"CREATE OR REPLACE TEMPORARY TABLE {ordered} AS FROM steps_after LIMIT 0")
            continue
        reading = {"events": counting.events, "products": counting.products}
        sqlfiles.create_table(
            connection,
            "session_items",
            counting.parameters,
            table=items,
            temporary=True,
            reading=reading,
            columns=COUNTED_COLUMNS,
        )
        if steps:
            sqlfiles.create_table(
                connection,
                "session_steps",
                counting.parameters,
                table=ordered,
                temporary=True,
                reading={**reading, "session_items": items},
            )
    # Views: the signed rows are read once or twice, and a table would hold every counted row a second time.
    sqlfiles.create_view(connection, "counted_changes", temporary=True)
    if steps:
        sqlfiles.create_view(connection, "counted_steps", temporary=True)


def changed_events(
    connection: duckdb.DuckDBPyConnection, changed: str = "changed_sessions", *, table: str = "changed_events"
) -> None:
    """The temporary table ``table``: ``sql/changed_events.sql`` for the sessions of the table ``changed``.

    The first stored event of those sessions is found first (``sql/first_changed_event.sql``, reading two columns),
    so that reading their events whole skips the stored events before it.
    """
    reading = {"changed_sessions": changed}
    since = sqlfiles.scalar(sqlfiles.query(connection, "first_changed_event", reading=reading))
    sqlfiles.create_table(connection, "changed_events", {"since": since}, table=table, temporary=True, reading=reading)


def drop_counted(connection: duckdb.DuckDBPyConnection) -> None:
    """Drop what :func:`count_changes` made, once counted: its tables hold every counted session item (GBs at 20M)."""
    for view in ("counted_changes", "counted_steps"):
        connection.execute(f"DROP VIEW IF EXISTS {view}")
    for suffix in ("after", "before"):
        connection.execute(f"DROP TABLE IF EXISTS counted_{suffix}")
        connection.execute(f"DROP TABLE IF EXISTS steps_{suffix}")
