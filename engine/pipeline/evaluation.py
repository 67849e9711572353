"""Evaluation by a time split: lists trained on the events before a cut-off, scored on the sessions after it.

The training counts are not counted again from the events before the
cut-off: they are the published counts minus what the sessions after it
(and those cut short by it) add, the same signed change a build applies
(``engine.pipeline.sessions``, ``sql/holdout_sessions.sql``), so the test
period cannot leak into what is scored, and the cost is that of the test
period, not of all history. The lists are ranked from those counts by the
same kernel as the published ones, and each test transition is looked up
in them (``sql/test_transitions.sql``): the talk's
MRR, next-item MRR@k and hit rate@k, catalogue coverage and popularity bias,
exactly as ``sql/evaluation.sql`` defines them (the SQL path and the visual
lists are scored by that file itself).

A difference in MRR@20 between two algorithms may be noise: each row also
carries, against the algorithm the build serves (``compared_with``), the
difference and its paired bootstrap interval (:func:`with_intervals`): test
sessions resampled with replacement, the same resamples for every
algorithm, so the gate and the tuner can tell a real gain from luck.

The session route is scored too, as the row :data:`VISIT`: at each test step
the served algorithm's training lists of the session so far, blended as the
route blends them (``sql/visit_lists.sql``; :mod:`engine.udfs.visits` on the
kernel path), and the next product's rank in that list.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from msgspec.structs import asdict

from engine import sqlfiles
from engine.config import AUTO, CLICK_ALGORITHMS, VISIT_BLEND, Algorithms, Config, ConfigError
from engine.pipeline import itemitem, sessions, state
from engine.pipeline.counts import Counts, matrices
from engine.publish import gate, warehouse
from engine.publish.store import Store
from engine.udfs import cooccurrence, resample, visits
from engine.udfs.pairs import PairRows

CUTS = (5, 10, 20)
"""The k of MRR@k and hit rate@k."""
COLUMNS = (
    ["algorithm", "sessions", "mrr", "pairs"]
    + [f"mrr_at_{k}" for k in CUTS]
    + [f"hit_rate_at_{k}" for k in CUTS]
    + ["coverage", "popularity_bias"]
)
"""The columns of ``sql/evaluation.sql``, which the kernel's scores share."""
INTERVALS = ("compared_with", "mrr_at_20_diff", "mrr_at_20_diff_low", "mrr_at_20_diff_high")
"""The columns :func:`with_intervals` adds: the served algorithm, and the difference from it with its interval."""
RESAMPLES = 1000
"""How many bootstrap resamples of the test sessions."""
LEVEL = 0.95
"""The bootstrap interval's confidence level."""
SEED = 17
"""The resamples' seed: the same data always gives the same interval."""
VISIT = VISIT_BLEND
"""The row that scores the session route: at each test step, the served algorithm's lists blended over the visit so far."""
SCORED = (*CLICK_ALGORITHMS, VISIT)
"""The evaluation's rows without the visual stage: each click algorithm's lists, then the session route's blend."""


class Scored(NamedTuple):
    """An evaluation's rows, and what their intervals were drawn from (:func:`session_gains`), to compare with others."""

    rows: pa.Table
    gains: dict[str, np.ndarray]
    sizes: np.ndarray


def cutoff(connection: duckdb.DuckDBPyConnection, config: Config) -> dt.datetime:
    """The configured cut-off, or ``test_days`` before the newest event."""
    if config.evaluation.cutoff:
        return config.evaluation.cutoff
    newest = sessions.newest(connection)
    assert newest is not None, "the evaluation holds out days of events, and there are none"
    return newest - dt.timedelta(days=config.evaluation.test_days)


def test_sessions(
    connection: duckdb.DuckDBPyConnection, algorithms: Algorithms, split: dt.datetime, kept: list[str] | None
) -> None:
    """The temporary table ``test_sessions``: the items of the sessions after ``split``, as the next build keeps them.

    The test sessions' events (``sql/test_events.sql``) are read as the
    training's are, through ``sql/session_items.sql``, so the same bot rules
    drop the same kind of session on both sides of the split. ``kept``: the
    store files of the last build's ``test_sessions`` (cut off at or before
    ``split``), in an incremental build after its counting: only the
    sessions it counts again (``changed_sessions``, whose events are
    ``changed_events``) are read (``sql/test_sessions_by_delta.sql``).
    """
    values = {**sessions.parameters(algorithms, None, None), "look_back_days": 0}  # every test event counts
    changed = "changed_" if kept is not None else ""
    events = {"events": "changed_events"} if kept is not None else None
    sqlfiles.create_table(connection, "test_events", {"cutoff": split}, table=f"{changed}test_events",
                          temporary=True, reading=events)  # fmt: skip
    sqlfiles.create_table(connection, "session_items", values, table=f"{changed}test_session_items", temporary=True,
                          reading={"events": f"{changed}test_events"})  # fmt: skip
    reading = {"test_events": f"{changed}test_events", "test_session_items": f"{changed}test_session_items"}
    sqlfiles.create_table(connection, "test_sessions", table=f"{changed}test_sessions", temporary=True,
                          reading=reading)  # fmt: skip
    if kept is not None:
        sqlfiles.create_view(connection, "stored_rows", {"files": kept}, view="kept_test_sessions", temporary=True)
        sqlfiles.create_table(connection, "test_sessions_by_delta", {"cutoff": split}, table="test_sessions",
                              temporary=True)  # fmt: skip


def test_items(connection: duckdb.DuckDBPyConnection) -> None:
    """The temporary table ``test_items`` (``sql/test_items.sql``) from ``test_sessions``: what the evaluation's SQL
    reads (the kernel path reads ``sql/test_transitions.sql``, which orders the sessions itself)."""
    sqlfiles.create_table(connection, "test_items", temporary=True, reading={"test_session_items": "test_sessions"})


def training(
    connection: duckdb.DuckDBPyConnection, counts: Counts, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of the events before ``split`` (``counts`` minus what the later ones add), and their matrices' deltas."""
    _held_out(connection, algorithms, split, counts.follows, to_training=True)
    return counts.with_changes(connection, algorithms.sr_window)


def published_from_training(
    connection: duckdb.DuckDBPyConnection, trained: Counts, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of every event: ``trained`` (the events before ``split``) plus what the later ones add.

    :func:`training` the other way round, for a build that counts
    everything: counting the training first and adding the test period
    reads the test period's sessions once, where counting everything and
    then taking the test period away reads them twice.
    """
    _held_out(connection, algorithms, split, trained.follows, to_training=False)
    return trained.with_changes(connection, algorithms.sr_window)


def _held_out(
    connection: duckdb.DuckDBPyConnection, algorithms: Algorithms, split: dt.datetime, steps: bool, *, to_training: bool
) -> None:
    """``counted_changes`` for the sessions that the published counts and the training's count differently.

    Those of ``sql/holdout_sessions.sql``, read as the published counts read
    them and as the training's do (up to ``split``): from the first reading
    to the second when going ``to_training``, else back.
    """
    published_newest = sessions.newest(connection)
    training_newest = sessions.newest(connection, until=split)
    window = {
        "until": split,
        "window_from": sessions.window_start(training_newest, algorithms.look_back_days),
        "window_to": sessions.window_start(published_newest, algorithms.look_back_days),
    }
    sqlfiles.create_table(connection, "holdout_sessions", window, temporary=True)
    sqlfiles.create_table(connection, "holdout_events", temporary=True)
    published = sessions.Counting("holdout_events", "products", sessions.parameters(algorithms, None, published_newest))
    trained = sessions.Counting("holdout_events", "products", sessions.parameters(algorithms, split, training_newest))
    before, after = (published, trained) if to_training else (trained, published)
    sessions.count_changes(connection, before=before, after=after, steps=steps)


def training_by_delta(
    connection: duckdb.DuckDBPyConnection, kept: state.Training, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of the events before ``split``: ``kept`` (the last build's) plus what changed since, and the deltas.

    For an incremental build, after its counting, whose temporary tables
    (``changed_sessions``, ``stored_events``, ``arrived_events``,
    ``previous_products``) say what arrived and what the catalogue changed:
    the sessions of ``sql/training_changes.sql`` are read as the last
    evaluation counted them and as this one does, so an hourly build's
    evaluation counts an hour of sessions, not the whole test period.
    """
    newest = sessions.newest(connection, until=split)
    look_back = algorithms.look_back_days
    was, now = sessions.window_start(kept.newest, look_back), sessions.window_start(newest, look_back)
    window = (min(was, now), max(was, now)) if was is not None and now is not None else (None, None)
    values = {
        "split_from": min(kept.cutoff, split),
        "split_to": max(kept.cutoff, split),
        "window_from": window[0],
        "window_to": window[1],
    }
    sqlfiles.create_table(connection, "training_changes", values, temporary=True)
    sessions.changed_events(connection, "training_changes", table="training_events")
    sqlfiles.create_table(
        connection, "events_before", table="training_events_before", temporary=True,
        reading={"changed_events": "training_events"},
    )  # fmt: skip
    sessions.count_changes(
        connection,
        before=sessions.Counting(
            "training_events_before", "previous_products", sessions.parameters(algorithms, kept.cutoff, kept.newest)
        ),
        after=sessions.Counting("training_events", "products", sessions.parameters(algorithms, split, newest)),
        steps=kept.counts.follows,
    )
    return kept.counts.with_changes(connection, algorithms.sr_window)


def training_from_scratch(
    connection: duckdb.DuckDBPyConnection, algorithms: Algorithms, split: dt.datetime
) -> tuple[Counts, dict[str, PairRows]]:
    """The counts of the events before ``split``, counted from nothing (``etalage tune``'s counting rules vary)."""
    newest = sessions.newest(connection, until=split)
    after = sessions.Counting("events", "products", sessions.parameters(algorithms, split, newest))
    counts = Counts.none(matrices(algorithms.compute))
    sessions.count_changes(connection, None, after, steps=counts.follows)
    return counts.with_changes(connection, algorithms.sr_window)


def scores(
    connection: duckdb.DuckDBPyConnection,
    counts: Counts,
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
    served: str = AUTO,
) -> pa.Table:
    """Score every algorithm with ``algorithms``' parameters, trained before ``split`` and tested after it.

    ``counts`` are the counts of every event (the published lists'). With
    ``visual_rows`` (the build's look-alikes), ``visual`` and the blend over
    ``min_sessions`` are scored too. ``served`` is ``snapshots.gate_algorithm``,
    which the differences are taken against (for ``auto``, the best).
    """
    held = {}

    def train() -> None:
        held["trained"] = training(connection, counts, algorithms, split)

    timed("training counts", train)
    return scored(connection, *held["trained"], algorithms, split, timed, visual_rows, min_sessions, served).rows


def scored(
    connection: duckdb.DuckDBPyConnection,
    trained: Counts,
    deltas: dict[str, PairRows],
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
    served: str = AUTO,
    kept_test: list[str] | None = None,
    ranked: tuple[cooccurrence.Ranked, np.ndarray] | None = None,
    keep: Callable[[cooccurrence.Lists], None] | None = None,
) -> Scored:
    """Rank the training counts (``trained`` plus its matrices' ``deltas``) and score the lists on the test sessions.

    ``kept_test``: the last build's test sessions, to change by delta (:func:`test_sessions`). ``ranked``: the
    row-local lists ranked from counts that differ in the rows it marks (``engine.pipeline.kept_lists``).
    ``keep`` is called with the training lists as soon as they are ranked (a build keeps them while it scores).
    """
    held: dict[str, Any] = {}

    def rank() -> None:
        held["items"] = trained.item_table()
        held["lists"] = cooccurrence.top_lists(
            held["items"],
            trained.rows(deltas),
            top_n=algorithms.top_n,
            min_support=algorithms.min_support,
            sr_window=algorithms.sr_window,
            compute=algorithms.compute,
            evidence=with_evidence(visual_rows),
            ranked=ranked,
        )

    def score() -> None:
        test_sessions(connection, algorithms, split, kept_test)
        connection.register("items", trained.items)
        try:
            steps = _transitions(sqlfiles.query(connection, "test_transitions").to_arrow_table())
        finally:
            connection.unregister("items")
        rows, ranks = _kernel_scores(held["items"], held["lists"], steps, connection)
        looks = None
        if visual_rows is not None:
            looks, scored_looks, looked = _scored_by_sql(
                connection, held["items"], held["lists"], visual_rows, algorithms, min_sessions
            )
            rows = pa.concat_tables([rows, scored_looks.select(COLUMNS).cast(rows.schema)])
            ranks |= looked
        session = _session_numbers(steps["first_step"])
        against = served_by(rows, served)
        if against in ranks:
            visit, ranks[VISIT] = _visit_scores(
                held["items"], held["lists"], steps, session, against, looks, connection
            )
            rows = pa.concat_tables([rows, visit])
        gains, sizes = session_gains(ranks, session)
        scored_rows = with_session_intervals(rows.sort_by("algorithm"), gains, sizes, served)
        held["scored"] = Scored(scored_rows, gains, sizes)

    timed("training lists", rank)
    if keep is not None:
        keep(held["lists"])
    timed("scores", score)
    return held["scored"]


def with_evidence(visual_rows: pa.Table | None) -> bool:
    """Whether the training lists keep each entry's count and score: only the visual blend reads them (as rows)."""
    return visual_rows is not None


def _transitions(table: pa.Table) -> dict[str, Any]:
    """``sql/test_transitions.sql``'s rows as the kernels read them: the numbers as NumPy arrays, the tenant as Arrow."""
    steps: dict[str, Any] = {"tenant": table.column("tenant")}
    for name, kind in (("item", np.int64), ("next_item", np.int64), ("first_step", bool)):
        steps[name] = table.column(name).to_numpy().astype(kind, copy=False)
    return steps


def _kernel_scores(
    items: cooccurrence.Items, lists: cooccurrence.Lists, steps: dict, connection
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """``sql/evaluation.sql``'s rows for the kernel's algorithms, and each transition's rank in their lists (0: absent)."""
    item = np.asarray(steps["item"], np.int64)
    next_item = np.asarray(steps["next_item"], np.int64)
    first = np.asarray(steps["first_step"], bool)
    tenant_of = np.full(len(items), -1, np.int32)
    for block, (start, end) in enumerate(lists.tenants):
        tenant_of[lists.by_order[start:end]] = block
    found = cooccurrence.ranks(lists, item, next_item, tenant_of)
    catalogue = _catalogue_size(connection)
    rows: list[dict[str, Any]] = []
    ranks: dict[str, np.ndarray] = {}
    listed = cooccurrence.listed_counts(lists)
    for number, algorithm in enumerate(cooccurrence.ALGORITHMS):
        if number == cooccurrence.POPULAR:
            lists_of = _item_lists(lists, number)
            shown_times = np.bincount(lists_of[lists_of >= 0], minlength=len(items))
        else:
            shown_times = listed[cooccurrence.list_index(number)]
        if not shown_times.any() or not item.size:
            continue  # sql/evaluation.sql has a row only for an algorithm with lists, and only with transitions
        rank = ranks[algorithm] = found[number]
        rows.append(_scores_row(algorithm, rank, first, shown_times, items, catalogue))
    return pa.Table.from_pylist(rows, schema=_SCHEMA), ranks


def _scores_row(
    algorithm: str, rank: np.ndarray, first: np.ndarray, listed: np.ndarray, items: cooccurrence.Items, catalogue: int
) -> dict[str, Any]:
    """One row of ``sql/evaluation.sql``: from each transition's ``rank`` (0: absent), which are ``first`` steps,
    and ``listed``, how often the lists the algorithm shows hold each item."""
    shown = np.flatnonzero(listed)
    by_rank = np.bincount(rank).tolist()  # transitions by rank (0: absent): every cut is read from it
    return {
        "algorithm": algorithm,
        "sessions": int(first.sum()),
        "mrr": _mean(np.bincount(rank[first]).tolist(), None),
        "pairs": int(rank.size),
        **{f"mrr_at_{k}": _mean(by_rank, k) for k in CUTS},
        **{f"hit_rate_at_{k}": _share(by_rank, k) for k in CUTS},
        "coverage": shown.size / catalogue,
        "popularity_bias": math.fsum(listed[shown] * np.log1p(items.sessions[shown])) / max(int(listed.sum()), 1),
    }


def _catalogue_size(connection: duckdb.DuckDBPyConnection) -> int:
    """How many products the catalogue has (over all tenants): what coverage is a share of."""
    (size,) = connection.execute("SELECT count(*) FROM products").fetchone() or (0,)
    return int(size)


def _item_lists(lists: cooccurrence.Lists, number: int) -> np.ndarray:
    """Each item's list of kernel algorithm ``number`` as item numbers, int32 (item, rank), -1 past its end.

    ``popular``'s come from the tenant's leaders: each leader gets the others,
    every other product the first ``top_n`` (``sql/popular.sql``).
    """
    top_n = lists.related.shape[2]
    if number != cooccurrence.POPULAR:
        listed = cooccurrence.list_index(number)
        return np.where(np.arange(top_n) < lists.length[listed][:, None], lists.related[listed], -1).astype(np.int32)
    related = np.full(lists.related.shape[1:], -1, np.int32)
    for block, (start, end) in enumerate(lists.tenants):
        leaders = lists.leaders[block][lists.leaders[block] >= 0]
        if leaders.size < 2:
            continue
        related[lists.by_order[start:end], : min(top_n, leaders.size)] = leaders[:top_n]
        for leader in leaders:
            others = leaders[leaders != leader][:top_n]
            related[leader] = -1
            related[leader, : others.size] = others
    return related


def _mean(by_rank: list[int], cut: int | None) -> float:
    """The mean reciprocal rank of transitions counted ``by_rank`` (0: absent; ranks below ``cut`` count as absent).

    Summed exactly, so the same in any order.
    """
    total = sum(by_rank)
    if not total:
        return 0.0
    return math.fsum(n / r for r, n in enumerate(by_rank[: None if cut is None else cut + 1]) if r and n) / total


def _share(by_rank: list[int], cut: int) -> float:
    """The share of transitions counted ``by_rank`` whose next product is in the top ``cut``."""
    total = sum(by_rank)
    return sum(by_rank[1 : cut + 1]) / total if total else 0.0


def _visit_scores(
    items: cooccurrence.Items,
    lists: cooccurrence.Lists,
    steps: dict,
    session: np.ndarray,
    served: str,
    looks: pa.Table | None,
    connection: duckdb.DuckDBPyConnection,
) -> tuple[pa.Table, np.ndarray]:
    """:data:`VISIT`'s row of scores and its ranks of the test transitions: ``sql/visit_lists.sql`` by the kernel.

    Coverage and popularity bias are those of the lists shown at the test
    steps (each step's list counted once), as the SQL reads them.
    """
    by_order = lists.by_order
    order = np.full(len(items), np.iinfo(np.int64).max, np.int64)
    order[by_order] = np.arange(by_order.size)
    names = pa.array([items.tenant[int(by_order[first])].as_py() for first, _ in lists.tenants], pa.string())
    block = pc.index_in(steps["tenant"], value_set=names)
    leaders = np.vstack([lists.leaders, np.full((1, lists.leaders.shape[1]), -1, np.int32)])  # last: no tenant
    block = block.fill_null(len(names)).to_numpy(zero_copy_only=False).astype(np.int32)
    starts = np.r_[np.flatnonzero(np.r_[True, session[1:] != session[:-1]]), session.size] if session.size else [0]
    rank, shown = visits.visit_lists(
        _served_lists(items, lists, served, looks),
        order,
        np.asarray(steps["item"], np.int64),
        np.asarray(steps["next_item"], np.int64),
        np.asarray(starts, np.int64),
        block,
        leaders,
    )
    first = np.asarray(steps["first_step"], bool)
    listed = np.bincount(shown[shown >= 0], minlength=len(items))
    row = _scores_row(VISIT, rank, first, listed, items, _catalogue_size(connection))
    return pa.Table.from_pylist([row], schema=_SCHEMA), rank.astype(np.int64)


def _served_lists(
    items: cooccurrence.Items, lists: cooccurrence.Lists, served: str, looks: pa.Table | None
) -> np.ndarray:
    """Each item's training list of ``served`` as item numbers, int32 (item, rank), -1 past its end."""
    if served in cooccurrence.ALGORITHMS:
        return _item_lists(lists, cooccurrence.ALGORITHMS.index(served))
    # A visual algorithm: its look-alike rows, joined to the item numbers.
    top_n = lists.related.shape[2]
    related = np.full((len(items), top_n), -1, np.int32)
    assert looks is not None, "a visual algorithm is served only where its lists were scored"
    numbers = pa.table({"tenant": items.tenant, "product_id": items.product_id, "item": np.arange(len(items))})
    rows = looks.filter(pc.equal(looks.column("algorithm").cast(pa.string()), served)).select(
        ["tenant", "product_id", "related_product_id", "rank"]
    )
    rows = pa.table(
        {
            name: rows.column(name).cast(pa.string()) if name != "rank" else rows.column(name)
            for name in rows.column_names
        }
    )
    joined = rows.join(numbers, ["tenant", "product_id"]).join(
        numbers.rename_columns(["tenant", "related_product_id", "related"]), ["tenant", "related_product_id"]
    )
    item = joined.column("item").to_numpy()
    rank = joined.column("rank").to_numpy().astype(np.int64)
    keep = rank <= top_n
    related[item[keep], rank[keep] - 1] = joined.column("related").to_numpy()[keep]
    return related


def _scored_by_sql(
    connection: duckdb.DuckDBPyConnection,
    items: cooccurrence.Items,
    lists: cooccurrence.Lists,
    visual_rows: pa.Table,
    algorithms: Algorithms,
    min_sessions: int,
) -> tuple[pa.Table, pa.Table, dict[str, np.ndarray]]:
    """``visual`` and the blend, scored by ``sql/evaluation.sql`` over the training's llr lists and the look-alikes.

    Returns their training lists (``itemitem`` rows), their rows of scores and their ranks of the test transitions.
    """
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
    test_items(connection)
    rows, ranks, _ = _evaluated(connection, looks)
    return looks, rows, ranks


def _evaluated(
    connection: duckdb.DuckDBPyConnection, trained: pa.Table
) -> tuple[pa.Table, dict[str, np.ndarray], np.ndarray]:
    """``sql/evaluation.sql`` over ``trained`` lists (and the table ``test_items``).

    Also returns each algorithm's ranks of the test transitions (0: absent)
    and each transition's session number, in (tenant, session, position) order.
    """
    connection.register("trained_rows", trained)
    try:
        sqlfiles.create_table(connection, "transition_ranks", temporary=True, reading={"itemitem": "trained_rows"})
        rows = sqlfiles.query(connection, "evaluation", reading={"itemitem": "trained_rows"}).to_arrow_table()
        ranked = connection.execute(
            "SELECT algorithm, coalesce(rank, 0) AS rank, position = 1 AS first_step FROM transition_ranks "
            "ORDER BY algorithm, tenant, session_id, position"
        ).fetchnumpy()
    finally:
        connection.unregister("trained_rows")
        connection.execute("DROP TABLE IF EXISTS transition_ranks")
    names = np.asarray(ranked["algorithm"], dtype=object)
    ranks = {name: np.asarray(ranked["rank"][names == name], np.int64) for name in rows.column("algorithm").to_pylist()}
    first = names == names[0] if names.size else np.zeros(0, bool)
    return rows, ranks, _session_numbers(ranked["first_step"][first])


def _visit_by_sql(
    connection: duckdb.DuckDBPyConnection, trained: pa.Table, served: str, top_n: int
) -> tuple[pa.Table, np.ndarray]:
    """:data:`VISIT`'s row and ranks: ``sql/visit_lists.sql`` over the ``trained`` lists, scored by ``sql/evaluation.sql``."""
    connection.register("trained_rows", trained)
    values = {"algorithm": served, "top_n": top_n, "name": VISIT}
    try:
        sqlfiles.create_table(connection, "visit_lists", values, temporary=True, reading={"itemitem": "trained_rows"})
        sqlfiles.create_table(connection, "visit_ranks", values, temporary=True)
        rows = sqlfiles.query(
            connection, "evaluation", reading={"itemitem": "visit_lists", "transition_ranks": "visit_ranks"}
        ).to_arrow_table()
        rank = connection.execute(
            "SELECT coalesce(rank, 0) AS rank FROM visit_ranks ORDER BY tenant, session_id, position"
        ).fetchnumpy()["rank"]
    finally:
        connection.unregister("trained_rows")
        connection.execute("DROP TABLE IF EXISTS visit_ranks")
        connection.execute("DROP TABLE IF EXISTS visit_lists")
    return rows, np.asarray(rank, np.int64)


def _session_numbers(first_step: np.ndarray) -> np.ndarray:
    """Each transition's session as a number 0, 1, ... (transitions in session order, each session's from its first step)."""
    return np.cumsum(np.asarray(first_step, bool), dtype=np.int64) - 1


def served_by(rows: pa.Table, configured: str) -> str:
    """What the other algorithms are compared with: the configured algorithm, or for ``auto`` the best in ``rows``.

    :func:`engine.publish.gate.served_algorithm` without a live snapshot: a
    build serves this one unless ``auto`` keeps the live snapshot's.
    """
    return gate.served_algorithm({row["algorithm"]: row for row in rows.to_pylist()}, configured).algorithm


def with_intervals(rows: pa.Table, ranks: dict[str, np.ndarray], session: np.ndarray, served: str) -> pa.Table:
    """``rows`` with :data:`INTERVALS`, from each transition's rank (0: absent) and session number, per algorithm."""
    return with_session_intervals(rows, *session_gains(ranks, session), served)


def session_gains(ranks: dict[str, np.ndarray], session: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per algorithm, each test session's sum of 1/rank within the top 20; and each session's number of transitions."""
    n = int(session.max()) + 1 if session.size else 0
    gains = {name: np.bincount(session, weights=_reciprocal(rank), minlength=n) for name, rank in ranks.items()}
    return gains, np.bincount(session, minlength=n)


def difference(gains: np.ndarray, other: np.ndarray, sizes: np.ndarray) -> tuple[float, float, float]:
    """MRR@20 of ``gains`` less that of ``other`` (the same test sessions, in one order) and its paired bootstrap interval."""
    per_session = (np.asarray(gains) - np.asarray(other))[None, :]
    sizes = np.asarray(sizes, np.float64)
    if not sizes.size:
        return 0.0, 0.0, 0.0
    low, high = np.quantile(_resampled(per_session, sizes), [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1)
    return float(per_session.sum() / sizes.sum()), float(low[0]), float(high[0])


def with_session_intervals(rows: pa.Table, gains: dict[str, np.ndarray], sizes: np.ndarray, served: str) -> pa.Table:
    """``rows`` with :data:`INTERVALS`: each algorithm's MRR@20 less the served one's, and its bootstrap interval.

    ``gains`` holds, per algorithm, each test session's sum of 1/rank within
    the top 20 (``sql/session_gains.sql``), and ``sizes`` each session's
    number of transitions, the sessions in the same order for all. The
    served algorithm is :func:`engine.publish.gate.served_algorithm` of these
    rows and ``served`` (the configured one, or ``auto``). The test sessions
    are resampled with replacement :data:`RESAMPLES` times (seeded): in each
    resample, every algorithm's MRR@20 over the drawn sessions' transitions
    less the served one's, the same draws for all (a paired bootstrap); the
    interval holds the middle :data:`LEVEL` of those differences. The served
    algorithm compared with itself gets 0.
    """
    against = served_by(rows, served)
    n = rows.num_rows
    columns = {
        "compared_with": pa.array([against if against in gains else None] * n, pa.string()),
        "mrr_at_20_diff": pa.array([None] * n, pa.float64()),
        "mrr_at_20_diff_low": pa.array([None] * n, pa.float64()),
        "mrr_at_20_diff_high": pa.array([None] * n, pa.float64()),
    }
    sizes = np.asarray(sizes, np.float64)
    if against in gains and sizes.size:
        names = rows.column("algorithm").to_pylist()
        per_session = np.stack([np.asarray(gains[name]) - np.asarray(gains[against]) for name in names])
        drawn = _resampled(per_session, sizes)
        low, high = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1)
        columns["mrr_at_20_diff"] = pa.array(per_session.sum(axis=1) / sizes.sum())
        columns["mrr_at_20_diff_low"] = pa.array(low)
        columns["mrr_at_20_diff_high"] = pa.array(high)
    for name, values in columns.items():
        rows = rows.append_column(name, values)
    return rows


def _reciprocal(rank: np.ndarray) -> np.ndarray:
    """1 / rank within the top 20, else 0: each transition's share of MRR@20."""
    return np.where((rank > 0) & (rank <= 20), 1.0 / np.maximum(rank, 1), 0.0)


def _resampled(per_session: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each algorithm's (rows of ``per_session``) mean difference in each bootstrap resample of the sessions.

    The resamples' sums of gains and of transitions come from
    :func:`engine.udfs.resample.resampled_sums` (seeded with :data:`SEED`).
    """
    summed = resample.resampled_sums(np.vstack([per_session, sizes]).T, RESAMPLES, SEED)
    return (summed[:, :-1] / summed[:, -1:]).T


def scores_by_sql(
    connection: duckdb.DuckDBPyConnection,
    algorithms: Algorithms,
    split: dt.datetime,
    timed: itemitem.Timed = lambda name, create: create(),
    visual_rows: pa.Table | None = None,
    min_sessions: int = 0,
    served: str = AUTO,
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
        test_sessions(connection, algorithms, split, None)
        test_items(connection)
        rows, ranks, session = _evaluated(connection, held["rows"])
        against = served_by(rows, served)
        if against in ranks:
            visit, ranks[VISIT] = _visit_by_sql(connection, held["rows"], against, algorithms.top_n)
            rows = pa.concat_tables([rows, visit.cast(rows.schema)]).sort_by("algorithm")
        held["scores"] = with_intervals(rows, ranks, session, served)

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
    + [("coverage", pa.float64()), ("popularity_bias", pa.float64())]
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
        if current is None or how != "incremental":
            msg = f"the warehouse's counts do not fit this config ({why}); run `etalage build` first"
            raise ConfigError(msg)
        split = cutoff(connection, config)
        looks = connection.execute("SELECT * FROM itemitem WHERE algorithm = 'visual'").to_arrow_table()
        rows = scores(
            connection, current.counts, config.algorithms, split,
            visual_rows=looks if looks.num_rows else None, min_sessions=config.visual.min_sessions,
            served=config.snapshots.gate_algorithm,
        )  # fmt: skip
        record(connection, "evaluation", rows, config.algorithms, build_id=current.build_id, cutoff=split)
