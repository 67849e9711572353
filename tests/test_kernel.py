"""The pair- and follow-counting and list kernels against the SQL path on shapes the example shops do not have, and their guards.

The kernels split work by thread (the transpose by ranges of sessions, the
counting and ranking by products dealt in turn), keep counts as a base plus
signed deltas, number products in the order they were first counted, and
write ``popular`` from each tenant's leaders; none of that may change a row.
Tenants of one and two products, a product seen with every other, sessions
of one product, products viewed again and several times in a row, events
in the same second, ties everywhere, more shares than sessions. Their compiled
loops have no bounds checks, so the same cases also run uncompiled, where
NumPy checks every index, and input that would break them is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import sqlfiles
from engine.config import Algorithms
from engine.pipeline import counts as counting
from engine.pipeline import itemitem, kept_lists, sessions
from engine.pipeline.counts import Counts
from engine.publish import warehouse
from engine.publish.store import Store
from engine.udfs import cooccurrence, pairs, sequences

ROOT = Path(__file__).resolve().parents[1]


def random_events(seed: int, shapes=(("lone", 1, 3), ("pair", 2, 6), ("shop", 40, 300))) -> pa.Table:
    """Sessions' events over tenants given as (name, products, sessions), with a popular head in each.

    Sessions come back to products, view one several times in a row, and
    share timestamps (ties), and some events are of a type no list counts.
    """
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 11, 1)
    rows = {"ts": [], "tenant": [], "session_id": [], "event_type": [], "product_id": []}
    for tenant, products, visits in shapes:
        weights = 1 / np.arange(1, products + 1)
        for s in range(visits):
            size = int(rng.integers(1, 13))
            chosen = rng.choice(products, size=size, p=weights / weights.sum())
            seconds = np.cumsum(rng.integers(0, 3, size=size))  # 0: the same second as the event before
            for product, second in zip(chosen, seconds, strict=True):
                rows["ts"].append(start + dt.timedelta(minutes=s, seconds=int(second)))
                rows["tenant"].append(tenant)
                rows["session_id"].append(f"{tenant}-{s}")
                rows["event_type"].append("pageView" if rng.random() > 0.1 else "search")
                rows["product_id"].append(f"p{product:03d}")
    return pa.table(rows)


def products_of(events: pa.Table) -> pa.Table:
    """The catalogue: every product the events name."""
    return events.select(["tenant", "product_id"]).group_by(["tenant", "product_id"]).aggregate([])


def algorithms(top_n: int, min_support: int, max_session_items: int = 50, sr_window: int = 3) -> Algorithms:
    return Algorithms(
        top_n=top_n, min_support=min_support, max_session_items=max_session_items, sr_window=sr_window,
        event_types=("pageView",),
    )  # fmt: skip


def counted(connection, counts: Counts, before: pa.Table | None, after: pa.Table, given: Algorithms) -> Counts:
    """``counts`` plus what the sessions of ``after`` count less what those of ``before`` did, kept as a build keeps them."""
    values = sessions.parameters(given, None, None)
    for name, events in (("events_after", after), ("events_before", before)):
        if events is not None:
            connection.register(name, events)
    connection.register("catalogue", products_of(after if before is None else pa.concat_tables([before, after])))
    sessions.count_changes(
        connection,
        None if before is None else sessions.Counting("events_before", "catalogue", values),
        sessions.Counting("events_after", "catalogue", values),
    )
    changed, deltas = counts.with_changes(connection, given.sr_window)
    return changed.stored(deltas)


def of_sessions(events: pa.Table, chosen: set[str]) -> pa.Table:
    return events.filter(pa.array([s in chosen for s in events.column("session_id").to_pylist()]))


def by_kernel(events: pa.Table, given: Algorithms, *, in_steps: bool = False) -> list:
    """itemitem by the kernels, from all sessions at once, or (``in_steps``) built up and taken apart by deltas.

    In steps: the first half counted, then the second half added while a
    tenth of the first is taken away and added back, then the stored delta
    folded into the base: every path a build's counts can take.
    """
    with warehouse.connect() as connection:
        if not in_steps:
            counts = counted(connection, Counts.none(), None, events, given)
        else:
            names = sorted(set(events.column("session_id").to_pylist()))
            first, again = set(names[: len(names) // 2]), set(names[: len(names) // 20])
            counts = counted(connection, Counts.none(), None, of_sessions(events, first), given)
            rest = of_sessions(events, (set(names) - first) | again)
            with mock.patch.object(counting, "FOLD_SHARE", 100.0):  # kept as a delta beside the base
                counts = counted(connection, counts, of_sessions(events, again), rest, given)
            assert all(kept.delta.pairs > 0 for kept in counts.kept.values())
            folded = dataclasses.replace(
                counts, kept={name: counting.Kept(pairs.add(*kept.rows)) for name, kept in counts.kept.items()}
            )
            rows = itemitem.kernel_rows(folded, given)
            assert rows.equals(itemitem.kernel_rows(counts, given))
        rows = itemitem.kernel_rows(counts, given)
        connection.register("kernel", rows)
        return connection.execute("SELECT * FROM kernel").fetchall()


def by_sql(events: pa.Table, given: Algorithms) -> list:
    """itemitem by sql/session_items.sql, session_steps.sql, pair_counts.sql .. itemitem.sql, on one in-memory warehouse."""
    with warehouse.connect() as connection:
        connection.register("events", events)
        connection.register("products", products_of(events))
        values = sessions.parameters(given, None, None)
        sqlfiles.create_table(connection, "session_items", values, temporary=True)
        return itemitem.sql_rows(connection, values, lambda name, step: step()).to_pylist()


def as_tuples(rows: list[dict]) -> list[tuple]:
    return [tuple(row.values()) for row in rows]


@pytest.mark.parametrize(
    ("seed", "given"),
    [(1, algorithms(5, 1)), (2, algorithms(3, 2, sr_window=1)), (3, algorithms(20, 1, 6, 10)), (4, algorithms(1, 3))],
)
def test_kernel_rows_are_the_sql_rows_in_their_order(seed, given):
    events = random_events(seed)
    expected = as_tuples(by_sql(events, given))
    assert len(expected) > 100
    assert by_kernel(events, given) == expected
    assert by_kernel(events, given, in_steps=True) == expected
    tenants = {row[0] for row in expected}
    assert tenants == {"pair", "shop"}  # a tenant of one product has nothing to recommend, not even popular
    listed = {row[1] for row in expected}
    assert listed == set(cooccurrence.ALGORITHMS)


def test_the_stored_file_holds_the_rows_in_their_order(tmp_path, monkeypatch):
    """The kernel's dictionaries cut down per row group, a mix of dictionaries, or plain text: the same rows come back."""
    events = random_events(5)
    given = algorithms(5, 1)
    with warehouse.connect() as connection:
        rows = itemitem.typed(itemitem.kernel_rows(counted(connection, Counts.none(), None, events, given), given))
    plain = rows.cast(itemitem.SCHEMA)
    assert pa.types.is_dictionary(rows.schema.field("related_product_id").type)
    remapped = pa.chunked_array(
        [pa.DictionaryArray.from_arrays(pa.array(range(3), pa.int32()), pa.array(["x", "y", "z"]))]
        + [chunk.dictionary_decode().dictionary_encode() for chunk in rows.column("product_id").chunks]
    )  # chunks whose dictionaries differ
    mixed = pa.concat_tables([plain.slice(0, 3), plain]).set_column(2, "product_id", remapped)
    monkeypatch.setattr(itemitem, "ROW_GROUP", 37)
    renamed = plain.slice(0, 3).set_column(2, "product_id", pa.array(["x", "y", "z"]))
    cases = ((rows, plain), (mixed, pa.concat_tables([renamed, plain])), (plain, plain), (plain[:0], plain[:0]))
    for table, expected in cases:
        itemitem.write(table, tmp_path / "itemitem.parquet")
        stored = pq.ParquetFile(tmp_path / "itemitem.parquet")
        assert stored.read().equals(expected)
        assert stored.schema_arrow == itemitem.SCHEMA
        if table.num_rows:
            group = stored.metadata.row_group(1)
            assert group.num_rows == 37
            columns = [group.column(i) for i in range(group.num_columns)]
            with_statistics = {column.path_in_schema for column in columns if column.is_stats_set}
            assert with_statistics == set(itemitem.SORT_KEYS)


@pytest.mark.parametrize("shapes", [(("small", 2, 4),), (("small", 5, 40),)])
def test_a_product_seen_with_every_product(shapes):
    """One tenant whose products all meet: counting then fills its lists to the last product."""
    events = random_events(7, shapes)
    expected = as_tuples(by_sql(events, algorithms(10, 1)))
    assert expected and by_kernel(events, algorithms(10, 1)) == expected


@pytest.mark.parametrize("threads", [1, 2, 7, 64])
def test_any_number_of_threads_gives_the_same_rows(monkeypatch, threads):
    """How many shares the work is split into, whatever the machine's cores (64 shares: some empty)."""
    monkeypatch.setattr(pairs.numba, "get_num_threads", lambda: threads)
    events = random_events(5)
    assert by_kernel(events, algorithms(10, 1), in_steps=True) == as_tuples(by_sql(events, algorithms(10, 1)))


@pytest.mark.parametrize("threads", [1, 2, 7])
def test_ranking_without_evidence_gives_the_same_lists(monkeypatch, threads):
    """The evaluation's ranking (no counts or scores kept, each thread ranking in a row of its own) gives the
    related products and lengths that a ranking keeping them gives, from stored counts and from a delta."""
    monkeypatch.setattr(pairs.numba, "get_num_threads", lambda: threads)
    events, given = random_events(11), algorithms(10, 1)
    names = sorted(set(events.column("session_id").to_pylist()))
    with warehouse.connect() as connection, mock.patch.object(counting, "FOLD_SHARE", 100.0):
        counts = counted(connection, Counts.none(), None, of_sessions(events, set(names[::2])), given)
        counts = counted(connection, counts, None, of_sessions(events, set(names[1::2])), given)
    assert all(kept.delta.pairs > 0 for kept in counts.kept.values())
    ranked = {
        evidence: cooccurrence.top_lists(
            counts.item_table(), counts.rows(), top_n=given.top_n, min_support=given.min_support,
            sr_window=given.sr_window, evidence=evidence,
        )
        for evidence in (True, False)
    }  # fmt: skip
    kept, bare = ranked[True], ranked[False]
    assert bare.score is None and bare.cooccurrence is None and kept.length.any()
    np.testing.assert_array_equal(bare.length, kept.length)
    listed = np.arange(given.top_n) < kept.length[..., None]  # entries past a list's length are never read
    np.testing.assert_array_equal(np.where(listed, bare.related, -1), np.where(listed, kept.related, -1))


def arrival(given: Algorithms) -> tuple[Counts, Counts, dict]:
    """Counts of three quarters of some sessions, then the rest arriving with sessions of new products: the counts
    before, after, and the deltas between."""
    events = random_events(13)
    names = sorted(set(events.column("session_id").to_pylist()))
    arriving = pa.concat_tables(
        [of_sessions(events, set(names[len(names) * 3 // 4 :])), random_events(14, (("new", 4, 12),))]
    )
    with warehouse.connect() as connection:
        before = counted(connection, Counts.none(), None, of_sessions(events, set(names[: len(names) * 3 // 4])), given)
        connection.register("events_after", arriving)
        connection.register("catalogue", products_of(pa.concat_tables([events, arriving])))
        values = sessions.parameters(given, None, None)
        sessions.count_changes(connection, None, sessions.Counting("events_after", "catalogue", values))
        after, deltas = before.with_changes(connection, given.sr_window)
    return before, after, deltas


def ranking(given: Algorithms, evidence: bool = True):
    def rank(counts: Counts, deltas=None, ranked=None) -> cooccurrence.Lists:
        return cooccurrence.top_lists(
            counts.item_table(), counts.rows(deltas), top_n=given.top_n, min_support=given.min_support,
            sr_window=given.sr_window, evidence=evidence, ranked=ranked,
        )  # fmt: skip

    return rank


def assert_same_lists(some: cooccurrence.Lists, other: cooccurrence.Lists, top_n: int) -> None:
    """The same lists: lengths, and each entry within a list's length (past it, nothing is read)."""
    np.testing.assert_array_equal(some.length, other.length)
    listed = np.arange(top_n) < other.length[..., None]
    for name in ("related", "cooccurrence", "score"):
        if getattr(other, name) is not None:
            np.testing.assert_array_equal(
                np.where(listed, getattr(some, name), 0), np.where(listed, getattr(other, name), 0), name
            )


@pytest.mark.parametrize("evidence", [True, False])
def test_ranking_again_only_the_rows_that_changed_gives_the_lists_ranked_whole(evidence):
    """The row-local lists of an earlier ranking, with the rows whose counts changed since (a delta, new sessions,
    new products) ranked again, are the lists of ranking everything (``engine.pipeline.kept_lists``)."""
    given = algorithms(10, 1)
    before, after, deltas = arrival(given)
    rank = ranking(given, evidence)
    changed = kept_lists.changed(before, after, deltas)
    assert (
        after.sessions.size > before.sessions.size and 0 < changed[: before.sessions.size].sum() < before.sessions.size
    )
    again = rank(after, deltas, (rank(before).row_local(), changed))
    assert_same_lists(again, rank(after, deltas), given.top_n)


def test_kept_lists_read_back_whole_or_as_changes_give_the_same_lists(tmp_path, monkeypatch):
    """Kept in the store as a whole copy, then as the lists changed since it, and read back mapped: the lists."""
    given = algorithms(10, 1)
    before, after, deltas = arrival(given)
    rank, store = ranking(given), Store(tmp_path / "warehouse.duckdb")
    files = kept_lists.save(store, "first", rank(before), given)
    assert files.changes is None
    reused = kept_lists.reusable(store, files, before, after, deltas, given, evidence=True)
    assert reused is not None and reused.files == files
    changed = reused.changed
    second = rank(after, deltas, reused.start)
    monkeypatch.setattr(kept_lists, "CHANGES_SHARE", 1.0)
    later = kept_lists.save(store, "second", second, given, reused)
    assert later.base == files.base and later.changes is not None
    again = kept_lists.load(store, later, given, evidence=True)
    assert again.rows.size == changed.sum() and again.items == after.sessions.size
    unchanged = np.zeros(after.sessions.size, bool)  # the same counts again: every list read back
    assert_same_lists(rank(after, deltas, (again, unchanged)), rank(after, deltas), given.top_n)
    monkeypatch.setattr(kept_lists, "CHANGES_SHARE", 0.0)  # too many changed: a whole copy again
    assert kept_lists.save(store, "third", second, given, reused).changes is None
    assert kept_lists.load(store, later, algorithms(5, 1), evidence=True) is None  # ranked otherwise: not reused
    assert kept_lists.reusable(store, later, before, after, deltas, algorithms(5, 1), evidence=True) is None
    training = kept_lists.save(store, "training", ranking(given, evidence=False)(before), given)
    assert kept_lists.load(store, training, given, evidence=True) is None  # no counts or scores kept


def test_lists_are_kept_only_where_a_row_local_algorithm_is_computed():
    """A build of llr's lists alone (the lean config) writes no kept lists: none of them could be reused."""
    given = algorithms(10, 1)
    assert kept_lists.worth_keeping(given)
    assert not kept_lists.worth_keeping(msgspec.structs.replace(given, compute=("llr", "popular")))
    assert kept_lists.worth_keeping(msgspec.structs.replace(given, compute=("llr", "transitions")))


def test_taking_every_session_away_leaves_nothing():
    with warehouse.connect() as connection:
        events = random_events(8)
        given = algorithms(5, 1)
        counts = counted(connection, Counts.none(), None, events, given)
        counts = counted(connection, counts, events, events.slice(0, 0), given)
        assert not counts.sessions.any() and counts.tenant_sessions == {}
        assert all(pairs.add(*kept.rows).pairs == 0 for kept in counts.kept.values())
        assert itemitem.kernel_rows(counts, given).num_rows == 0


def test_the_transpose_is_the_same_for_any_split():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 6, size=50)
    basket_ptr = np.r_[0, np.cumsum(sizes)].astype(np.int32)
    basket_items = np.concatenate([rng.choice(30, size=s, replace=False) for s in sizes]).astype(np.int32)
    first = pairs.transpose(basket_ptr, basket_items, 30, 1)
    for shares in (2, 3, 7, 64):  # 64 shares for 50 sessions: some are empty
        again = pairs.transpose(basket_ptr, basket_items, 30, shares)
        for mine, theirs in zip(again[:3], first[:3], strict=True):
            assert np.array_equal(mine, theirs)
        assert again[3] == first[3]
    # Each product's sessions, in session order, the sum of their sizes, and no repeats.
    item_ptr, item_baskets, width, repeated = first
    assert not repeated
    holding = {
        item: [b for b in range(50) if item in basket_items[basket_ptr[b] : basket_ptr[b + 1]]] for item in range(30)
    }
    for item, baskets in holding.items():
        assert item_baskets[item_ptr[item] : item_ptr[item + 1]].tolist() == baskets
        assert width[item] == sum(sizes[b] for b in baskets)


BASKETS = [[2], [0, 1], [0, 1], [0, 1, 2]]


def test_counts_are_the_pairs_of_the_baskets_and_a_sliced_list_array_counts_the_same():
    whole = pairs.count(pa.array(BASKETS, pa.list_(pa.int32())), np.ones(4, np.int32), 3)
    rows = {
        a: dict(zip(whole.related[whole.start[a] : whole.start[a] + whole.length[a]].tolist(),
                    whole.count[whole.start[a] : whole.start[a] + whole.length[a]].tolist(), strict=True))
        for a in range(3)
    }  # fmt: skip
    assert rows == {0: {1: 3, 2: 1}, 1: {0: 3, 2: 1}, 2: {0: 1, 1: 1}}
    padded = pa.array([[1, 1, 1, 1], *BASKETS], pa.list_(pa.int32())).slice(1)  # offsets start at 4
    sliced = pairs.count(padded, np.ones(4, np.int32), 3)
    for mine, theirs in zip(
        (sliced.start, sliced.length, sliced.related, sliced.count),
        (whole.start, whole.length, whole.related, whole.count),
        strict=True,
    ):
        assert np.array_equal(mine, theirs)


def as_dict(rows: pairs.PairRows) -> dict[int, dict[int, int]]:
    return {
        a: dict(zip(rows.related[rows.start[a] : rows.start[a] + rows.length[a]].tolist(),
                    rows.count[rows.start[a] : rows.start[a] + rows.length[a]].tolist(), strict=True))
        for a in range(rows.start.size) if rows.length[a]
    }  # fmt: skip


def test_follow_counts_by_hand():
    """Steps 0 1 2 0 and 1 2, then 1 2 taken away again: what follows what, weighted by 1/distance within 2 steps."""
    steps = pa.array([[0, 1, 2, 0], [1, 2], [1, 2]], pa.list_(pa.int32()))
    signs = np.array([1, 1, -1], np.int32)
    counted = {name: as_dict(rows) for name, rows in sequences.count(steps, signs, 3, sequences.matrices(2)).items()}
    assert counted["next"] == {0: {1: 1}, 1: {2: 1}, 2: {0: 1}}
    assert counted["adjacent"] == {0: {1: 1, 2: 1}, 1: {0: 1, 2: 1}, 2: {1: 1, 0: 1}}
    # scale 2: 2 // 1 = 2 for the next step, 2 // 2 = 1 two steps on; 0 after 0 is no pair.
    assert counted["rules"] == {0: {1: 2, 2: 1}, 1: {2: 2, 0: 1}, 2: {0: 2}}
    assert counted["rules_both"] == {0: {1: 3, 2: 3}, 1: {0: 3, 2: 2}, 2: {0: 3, 1: 2}}


@pytest.mark.parametrize(
    ("steps", "signs", "window", "message"),
    [
        ([[3], [0, 1]], [1, 1], 2, "lists of item numbers 0..2"),
        ([[-1], [0, 1]], [1, 1], 2, "lists of item numbers 0..2"),
        ([None, [0, 1]], [1, 1], 2, "without nulls"),
        ([[None], [0, 1]], [1, 1], 2, "without nulls"),
        ([[2], [0, 1]], [1], 2, "1 signs for 2 sessions"),
        ([[2], [0, 1]], [1, 1], 11, "a window of 1..10 steps"),
        ([[2], [0, 1]], [1, 2], 2, r"sign must be \+1 or -1"),
        ([[2], [0, 1]], [0, 1], 2, r"sign must be \+1 or -1"),
    ],
    ids=["item too large", "negative item", "null session", "null item", "signs", "window", "sign of 2", "sign of 0"],
)
def test_steps_the_compiled_loops_cannot_take_are_refused(steps, signs, window, message):
    following = sequences.Following(window, both=False, weighted=True)
    with pytest.raises(ValueError, match=message):
        sequences.count(pa.array(steps, pa.list_(pa.int32())), np.array(signs, np.int32), 3, {"rules": following})


def test_saved_counts_load_as_they_were(tmp_path):
    counts = pairs.count(pa.array(BASKETS, pa.list_(pa.int32())), np.array([1, 1, -1, 1], np.int32), 3)
    counts.save(tmp_path / "pairs")
    loaded = pairs.PairRows.load(tmp_path / "pairs")
    for name in pairs.ARRAYS:
        assert np.array_equal(getattr(loaded, name), getattr(counts, name)), name


@pytest.mark.parametrize(
    ("baskets", "signs", "message"),
    [
        ([[3], [0, 1], [0, 1], [0, 1, 2]], [1, 1, 1, 1], "lists of item numbers 0..2"),
        ([[-1], [0, 1], [0, 1], [0, 1, 2]], [1, 1, 1, 1], "lists of item numbers 0..2"),
        ([None, [0, 1], [0, 1], [0, 1, 2]], [1, 1, 1, 1], "without nulls"),
        ([[None], [0, 1], [0, 1], [0, 1, 2]], [1, 1, 1, 1], "without nulls"),
        ([[2], [0, 1], [0, 1, 1], [0, 1, 2]], [1, 1, 1, 1], "holds the same item twice"),
        (BASKETS, [1, 1, 1], "3 signs for 4 baskets"),
    ],
    ids=["item too large", "negative item", "null basket", "null item", "repeated item", "signs"],
)
def test_input_the_compiled_loops_cannot_take_is_refused(baskets, signs, message):
    with pytest.raises(ValueError, match=message):
        pairs.count(pa.array(baskets, pa.list_(pa.int32())), np.array(signs, np.int32), 3)


def test_more_than_three_sets_of_counts_are_refused():
    items = cooccurrence.Items(pa.array(["t"]), pa.array(["p"]), np.ones(1, np.int64), np.ones(1, np.int64))
    too_many = {name: (pairs.PairRows.empty(1),) * 4 for name in counting.MATRICES}
    with pytest.raises(ValueError, match="at most the stored counts and two deltas"):
        cooccurrence.top_lists(items, too_many, top_n=5, min_support=1, sr_window=2)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already uncompiled")
@pytest.mark.slow
def test_uncompiled_the_same_cases_stay_in_bounds():
    """Every case above, interpreted: NumPy raises IndexError where the compiled loops would corrupt memory."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not uncompiled"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
