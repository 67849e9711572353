"""Evaluation by a time split: lists from the events before a cut-off, scored on the sessions after it.

The lists are recomputed by the same item-item stage as the published ones,
in a schema of their own (``holdout``) that reads only events before the
cut-off, so the test period cannot leak into what is scored. The scores are
``sql/evaluation.sql``: the talk's MRR, next-item MRR@k and hit rate@k, and
catalogue coverage.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict

import duckdb
import pyarrow as pa

from engine import sqlfiles
from engine.config import Algorithms, Config
from engine.pipeline import itemitem
from engine.publish import warehouse


def cutoff(connection: duckdb.DuckDBPyConnection, config: Config) -> dt.datetime:
    """The configured cut-off, or ``test_days`` before the newest event."""
    if config.evaluation.cutoff:
        return config.evaluation.cutoff
    return connection.execute(
        "SELECT max(ts) - to_days(CAST($days AS INTEGER)) FROM events", {"days": config.evaluation.test_days}
    ).fetchone()[0]


def scores(
    connection: duckdb.DuckDBPyConnection,
    algorithms: Algorithms,
    split: dt.datetime,
    pairs: str = "kernel",
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
) -> pa.Table:
    """Score every algorithm with ``algorithms``' parameters, trained before ``split`` and tested after it.

    With ``visual_rows`` (the build's look-alikes), ``visual`` and the blend
    over ``min_sessions`` are scored too.
    """
    parameters = {**algorithms.parameters(), "until": split, "min_sessions": min_sessions}
    connection.execute("CREATE SCHEMA holdout")
    try:
        connection.execute("USE holdout")
        connection.execute("SET search_path = 'holdout,main'")
        try:
            itemitem.stage(connection, pairs, parameters, timed, visual_rows)
        finally:
            connection.execute("USE main")
            connection.execute("RESET search_path")
        scored = {}

        def score() -> None:
            sqlfiles.create_table(connection, "test_items", {**parameters, "cutoff": split}, temporary=True)
            scored["rows"] = sqlfiles.query(connection, "evaluation").to_arrow_table()

        timed("scores", score)
        return scored["rows"]
    finally:
        connection.execute("DROP SCHEMA holdout CASCADE")


def record(
    connection: duckdb.DuckDBPyConnection, history: str, rows: pa.Table, algorithms: Algorithms, **columns: object
) -> None:
    """Append scored rows to a history table, with the parameters and any extra ``columns`` in front."""
    connection.register("scored_rows", rows)
    names = list(columns)
    front = ", ".join(f"${name} AS {name}" for name in names)
    connection.execute(
        f"CREATE OR REPLACE TEMPORARY TABLE new_rows AS SELECT {front}{', ' if front else ''}"
        "CAST(now() AT TIME ZONE 'UTC' AS TIMESTAMP) AS evaluated_at, CAST($parameters AS JSON) AS parameters, * FROM scored_rows",
        {**columns, "parameters": json.dumps(asdict(algorithms))},
    )
    connection.unregister("scored_rows")
    warehouse.append_history(connection, history, "new_rows")
    connection.execute("DROP TABLE new_rows")


def evaluate(
    connection: duckdb.DuckDBPyConnection,
    config: Config,
    pairs: str,
    build_id: str,
    timed: itemitem.Timed,
    visual_rows: pa.Table | None = None,
) -> None:
    """The build's evaluation: score the configured algorithms (and the look-alikes, if any) into ``evaluation``."""
    split = cutoff(connection, config)
    rows = scores(connection, config.algorithms, split, pairs, timed, visual_rows, config.visual.min_sessions)
    record(connection, "evaluation", rows, config.algorithms, build_id=build_id, cutoff=split)


def rescore(config: Config) -> None:
    """Score the current warehouse again (``etalage evaluate``) and add the rows to ``evaluation``.

    The rows carry the latest build's id. The warehouse is amended through a
    copy that replaces it on success, as a build does.
    """
    with warehouse.amend(config.warehouse) as connection:
        build_id = connection.execute("SELECT max(build_id) FROM builds").fetchone()[0]
        split = cutoff(connection, config)
        looks = connection.execute("SELECT * FROM itemitem WHERE algorithm = 'visual'").to_arrow_table()
        rows = scores(
            connection,
            config.algorithms,
            split,
            visual_rows=looks if looks.num_rows else None,
            min_sessions=config.visual.min_sessions,
        )
        record(connection, "evaluation", rows, config.algorithms, build_id=build_id, cutoff=split)
