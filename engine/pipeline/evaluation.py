"""Evaluation by a time split: lists trained on the events before a cut-off, scored on the sessions after it.

The training counts are not counted again from the events before the
cut-off: they are the published counts minus what the sessions after it
(and those cut short by it) add, the same signed change a build applies
(``engine.pipeline.sessions``, ``sql/holdout_sessions.sql``), so the test
period cannot leak into what is scored, and the cost is that of the test
period, not of all history. The lists are ranked from those counts by the
same kernel as the published ones, and each test transition is looked up
in them (``sql/test_items.sql``, ``sql/test_transitions.sql``): the talk's
MRR, next-item MRR@k and hit rate@k, and catalogue coverage, exactly as
``sql/evaluation.sql`` defines them (the SQL path and the visual lists are
scored by that file itself).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import sqlfiles
from engine.config import Algorithms, Config, ConfigError
from engine.pipeline import itemitem, sessions, state
from engine.pipeline.counts import Counts
from engine.publish import warehouse
from engine.publish.store import Store
from engine.udfs import cooccurrence
from engine.udfs.pairs import PairRows

CUTS = (5, 10, 20)
"""The k of MRR@k and hit rate@k."""
COLUMNS = (
    ["algorithm", "sessions", "mrr", "pairs"]
    + [f"mrr_at_{k}" for k in CUTS]
    + [f"hit_rate_at_{k}" for k in CUTS]
    + ["coverage"]
)
"""The columns of ``sql/evaluation.sql``, which the kernel's scores share."""


def cutoff(connection: duckdb.DuckDBPyConnection, config: Config) -> dt.datetime:
    """The configured cut-off, or ``test_days`` before the newest event."""
    if config.evaluation.cutoff:
        return config.evaluation.cutoff
    return sessions.newest(connection) - dt.timedelta(days=config.evaluation.test_days)


def training(
    connection: duckdb.DuckDBPyConnection, counts: Counts, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of the events before ``split`` (``counts`` minus what the later ones add), and their matrices' deltas."""
    published_newest = sessions.newest(connection)
    training_newest = sessions.newest(connection, until=split)
    window = {
        "until": split,
        "window_from": sessions.window_start(training_newest, algorithms.look_back_days),
        "window_to": sessions.window_start(published_newest, algorithms.look_back_days),
    }
    sqlfiles.create_table(connection, "holdout_sessions", window, temporary=True)
    sqlfiles.create_table(connection, "holdout_events", temporary=True)
    sessions.count_changes(
        connection,
        before=sessions.Counting("holdout_events", "products", sessions.parameters(algorithms, None, published_newest)),
        after=sessions.Counting("holdout_events", "products", sessions.parameters(algorithms, split, training_newest)),
    )
    return counts.with_changes(connection, algorithms.sr_window)


def training_from_scratch(
    connection: duckdb.DuckDBPyConnection, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of the events before ``split``, counted from nothing (``etalage tune``'s counting rules vary)."""
    newest = sessions.newest(connection, until=split)
    after = sessions.Counting("events", "products", sessions.parameters(algorithms, split, newest))
    sessions.count_changes(connection, None, after)
    return Counts.none().with_changes(connection, algorithms.sr_window)


def scores(
    connection: duckdb.DuckDBPyConnection,
    counts: Counts,
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
) -> pa.Table:
    """Score every algorithm with ``algorithms``' parameters, trained before ``split`` and tested after it.

    ``counts`` are the counts of every event (the published lists'). With
    ``visual_rows`` (the build's look-alikes), ``visual`` and the blend over
    ``min_sessions`` are scored too.
    """
    held = {}

    def train() -> None:
        held["trained"] = training(connection, counts, algorithms, split)

    timed("training counts", train)
    return scored(connection, *held["trained"], algorithms, split, timed, visual_rows, min_sessions)


def scored(
    connection: duckdb.DuckDBPyConnection,
    trained: Counts,
    deltas: dict[str, PairRows],
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
) -> pa.Table:
    """Rank the training counts (``trained`` plus its matrices' ``deltas``) and score the lists on the test sessions."""
    held = {}

    def rank() -> None:
        held["items"] = trained.item_table()
        held["lists"] = cooccurrence.top_lists(
            held["items"],
            trained.rows(deltas),
            top_n=algorithms.top_n,
            min_support=algorithms.min_support,
            sr_window=algorithms.sr_window,
        )

    def score() -> None:
        parameters = {**algorithms.parameters(), "cutoff": split}
        sqlfiles.create_table(connection, "test_items", parameters, temporary=True)
        connection.register("items", trained.items)
        try:
            steps = sqlfiles.query(connection, "test_transitions").fetchnumpy()
        finally:
            connection.unregister("items")
        rows = _kernel_scores(held["items"], held["lists"], steps, connection)
        if visual_rows is not None:
            looks = _scored_by_sql(connection, held["items"], held["lists"], visual_rows, algorithms, min_sessions)
            rows = pa.concat_tables([rows, looks.select(COLUMNS).cast(rows.schema)])
        held["rows"] = rows.sort_by("algorithm")

    timed("training lists", rank)
    timed("scores", score)
    return held["rows"]


def _kernel_scores(items: cooccurrence.Items, lists: cooccurrence.Lists, steps: dict, connection) -> pa.Table:
    """``sql/evaluation.sql``'s rows for the kernel's algorithms, from each transition's rank in their lists."""
    item = np.asarray(steps["item"], np.int64)
    next_item = np.asarray(steps["next_item"], np.int64)
    first = np.asarray(steps["first_step"], bool)
    tenant_of = np.full(len(items), -1, np.int32)
    for block, (start, end) in enumerate(lists.tenants):
        tenant_of[lists.by_order[start:end]] = block
    found = cooccurrence.ranks(lists, item, next_item, tenant_of)
    catalogue = connection.execute("SELECT count(*) FROM products").fetchone()[0]
    rows = []
    for number, algorithm in enumerate(cooccurrence.ALGORITHMS):
        related = _related(lists, number)
        if not related.size or not item.size:
            continue  # sql/evaluation.sql has a row only for an algorithm with lists, and only with transitions
        rank = found[number]
        rows.append(
            {
                "algorithm": algorithm,
                "sessions": int(first.sum()),
                "mrr": _mean(rank[first], None),
                "pairs": int(rank.size),
                **{f"mrr_at_{k}": _mean(rank, k) for k in CUTS},
                **{f"hit_rate_at_{k}": _share(rank, k) for k in CUTS},
                "coverage": np.unique(related).size / catalogue,
            }
        )
    return pa.Table.from_pylist(rows, schema=_SCHEMA)


def _related(lists: cooccurrence.Lists, number: int) -> np.ndarray:
    """Every item that some list of algorithm ``number`` names (for its coverage)."""
    if number == cooccurrence.POPULAR:
        named = []
        for block, (start, end) in enumerate(lists.tenants):
            leaders = lists.leaders[block][lists.leaders[block] >= 0]
            top_n = lists.related.shape[2]
            members = lists.by_order[start:end]
            if len(leaders) > 1 and np.isin(members, leaders, invert=True).any():
                named.append(leaders[:top_n])  # a product outside the leaders gets the first top_n
            for leader in leaders if len(leaders) > 1 else ():
                named.append(leaders[leaders != leader][:top_n])  # a leader gets the others
        return np.unique(np.concatenate(named)) if named else np.empty(0, np.int32)
    listed = cooccurrence.list_index(number)
    keep = np.arange(lists.related.shape[2]) < lists.length[listed][:, None]
    return lists.related[listed][keep]


def _mean(rank: np.ndarray, cut: int | None) -> float:
    """The mean reciprocal rank (0 for absent, or ranked below ``cut``), summed exactly: the same in any order."""
    if not rank.size:
        return 0.0
    counted = rank[(rank > 0) & ((rank <= cut) if cut else True)]
    histogram = np.bincount(counted)
    return math.fsum(n / r for r, n in enumerate(histogram) if r and n) / rank.size


def _share(rank: np.ndarray, cut: int) -> float:
    return float(((rank > 0) & (rank <= cut)).sum()) / rank.size if rank.size else 0.0


def _scored_by_sql(
    connection: duckdb.DuckDBPyConnection,
    items: cooccurrence.Items,
    lists: cooccurrence.Lists,
    visual_rows: pa.Table,
    algorithms: Algorithms,
    min_sessions: int,
) -> pa.Table:
    """``visual`` and the blend, scored by ``sql/evaluation.sql`` over the training's llr lists and the look-alikes."""
    trained = cooccurrence.rows_table(items, lists)
    llr = trained.filter(pc.equal(trained.column("algorithm").cast(pa.string()), "llr"))
    live = np.flatnonzero(items.sessions > 0)
    counted = pa.table(
        {
            "tenant": items.tenant.take(live),
            "product_id": items.product_id.take(live),
            "sessions": pa.array(items.sessions[live], pa.int64()),
        }
    )
    parameters = {**algorithms.parameters(), "min_sessions": min_sessions}
    blended = itemitem.with_visual(connection, llr, visual_rows, counted, parameters)
    looks = blended.filter(pc.is_in(blended.column("algorithm"), pa.array(["visual", "visual_blend"])))
    return _evaluated(connection, looks)


def _evaluated(connection: duckdb.DuckDBPyConnection, trained: pa.Table) -> pa.Table:
    """``sql/evaluation.sql`` over ``trained`` lists (and the table ``test_items``)."""
    connection.register("trained_rows", trained)
    try:
        return sqlfiles.query(connection, "evaluation", reading={"itemitem": "trained_rows"}).to_arrow_table()
    finally:
        connection.unregister("trained_rows")


def scores_by_sql(
    connection: duckdb.DuckDBPyConnection,
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
) -> pa.Table:
    """The readable evaluation: training lists counted again by the SQL path, scored by ``sql/evaluation.sql``."""
    parameters = {**sessions.parameters(algorithms, split, sessions.newest(connection, until=split))}
    held = {}

    def train() -> None:
        sqlfiles.create_table(connection, "session_items", parameters, temporary=True)
        rows = itemitem.sql_rows(connection, parameters, lambda name, step: step())
        if visual_rows is not None:
            counted = connection.table("item_counts").to_arrow_table()
            rows = itemitem.with_visual(
                connection, rows, visual_rows, counted, {**parameters, "min_sessions": min_sessions}
            )
        held["rows"] = rows

    def score() -> None:
        sqlfiles.create_table(connection, "test_items", {**parameters, "cutoff": split}, temporary=True)
        held["scores"] = _evaluated(connection, held["rows"])

    try:
        timed("training lists", train)
        timed("scores", score)
    finally:
        for name in ("session_items", *itemitem.SQL_STEPS, "item_counts", "tenant_sessions"):
            connection.execute(f"DROP TABLE IF EXISTS temp.{name}")
    return held["scores"]


_SCHEMA = pa.schema(
    [("algorithm", pa.string()), ("sessions", pa.int64()), ("mrr", pa.float64()), ("pairs", pa.int64())]
    + [(f"mrr_at_{k}", pa.float64()) for k in CUTS]
    + [(f"hit_rate_at_{k}", pa.float64()) for k in CUTS]
    + [("coverage", pa.float64())]
)


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


def rescore(config: Config) -> None:
    """Score the current warehouse again (``etalage evaluate``) and add the rows to ``evaluation``.

    The rows carry the latest build's id. The warehouse is amended through a
    copy that replaces it on success, as a build does.

    Raises:
        ConfigError: the config counts sessions otherwise than the last build did.
    """
    store = Store(config.warehouse)
    with warehouse.amend(config.warehouse) as connection:
        current = state.load(connection, store, database=None)
        how, why = state.how_to_count(config, current, full=False)
        if how != "incremental":
            msg = f"the warehouse's counts do not fit this config ({why}); run `etalage build` first"
            raise ConfigError(msg)
        split = cutoff(connection, config)
        looks = connection.execute("SELECT * FROM itemitem WHERE algorithm = 'visual'").to_arrow_table()
        rows = scores(
            connection, current.counts, config.algorithms, split,
            visual_rows=looks if looks.num_rows else None, min_sessions=config.visual.min_sessions,
        )  # fmt: skip
        record(connection, "evaluation", rows, config.algorithms, build_id=current.build_id, cutoff=split)
