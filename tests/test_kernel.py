"""The pair-counting and list kernels against the SQL path on shapes the example shops do not have, and their guards.

The kernels split work by thread (the transpose by ranges of sessions, the
counting and ranking by products dealt in turn), keep counts as a base plus
signed deltas, number products in the order they were first counted, and
write ``popular`` from each tenant's leaders; none of that may change a row.
Tenants of one and two products, a product seen with every other, sessions
of one product, ties everywhere, more shares than sessions. Their compiled
loops have no bounds checks, so the same cases also run uncompiled, where
NumPy checks every index, and input that would break them is refused.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.pipeline import counts as counting
from engine.pipeline import itemitem
from engine.pipeline.counts import Counts
from engine.publish import warehouse
from engine.udfs import cooccurrence, pairs

ROOT = Path(__file__).resolve().parents[1]


def random_session_items(seed: int, shapes=(("lone", 1, 3), ("pair", 2, 6), ("shop", 40, 300))) -> pa.Table:
    """Sessions over tenants given as (name, products, sessions), with a popular head in each."""
    rng = np.random.default_rng(seed)
    rows = {"tenant": [], "session_id": [], "product_id": []}
    for tenant, products, sessions in shapes:
        weights = 1 / np.arange(1, products + 1)
        for s in range(sessions):
            size = int(rng.integers(1, min(products, 8) + 1))
            chosen = rng.choice(products, size=size, replace=False, p=weights / weights.sum())
            for product in chosen:
                rows["tenant"].append(tenant)
                rows["session_id"].append(f"{tenant}-{s}")
                rows["product_id"].append(f"p{product:03d}")
    return pa.table(rows)


def counted(connection, counts: Counts, changes: pa.Table) -> Counts:
    """``counts`` plus what ``changes`` (session items with a sign) count, kept as the build keeps them."""
    connection.register("changes", changes)
    connection.execute("CREATE OR REPLACE TEMPORARY TABLE counted_changes AS FROM changes")
    connection.unregister("changes")
    changed, delta = counts.with_changes(connection)
    return changed.stored(delta)


def signed(session_items: pa.Table, sign: int) -> pa.Table:
    return session_items.append_column("sign", pa.array([sign] * session_items.num_rows, pa.int32()))


def by_kernel(session_items: pa.Table, top_n: int, min_support: int, *, in_steps: bool = False) -> list:
    """itemitem by the kernels, from all sessions at once, or (``in_steps``) built up and taken apart by deltas.

    In steps: the first half counted, then the second half added while a
    tenth of the first is taken away and added back, then the stored delta
    folded into the base: every path a build's counts can take.
    """
    with warehouse.connect() as connection:
        if not in_steps:
            counts = counted(connection, Counts.none(), signed(session_items, 1))
        else:
            sessions = sorted(set(session_items.column("session_id").to_pylist()))
            first = set(sessions[: len(sessions) // 2])
            again = set(sessions[: len(sessions) // 20])
            is_first = pa.array([s in first for s in session_items.column("session_id").to_pylist()])
            is_again = pa.array([s in again for s in session_items.column("session_id").to_pylist()])
            counts = counted(connection, Counts.none(), signed(session_items.filter(is_first), 1))
            rest = session_items.filter(pc.invert(is_first))
            readded = session_items.filter(is_again)
            changes = pa.concat_tables([signed(rest, 1), signed(readded, -1), signed(readded, 1)])
            with mock.patch.object(counting, "FOLD_SHARE", 100.0):  # kept as a delta beside the base
                counts = counted(connection, counts, changes)
            assert counts.delta.pairs > 0
            folded = dataclasses.replace(counts, base=pairs.add(*counts.pairs), delta=pairs.PairRows.empty())
            rows = itemitem.kernel_rows(folded, top_n=top_n, min_support=min_support)
            assert rows.equals(itemitem.kernel_rows(counts, top_n=top_n, min_support=min_support))
        rows = itemitem.kernel_rows(counts, top_n=top_n, min_support=min_support)
        connection.register("kernel", rows)
        return connection.execute("SELECT * FROM kernel").fetchall()


def by_sql(session_items: pa.Table, top_n: int, min_support: int) -> list:
    """itemitem by sql/pair_counts.sql .. itemitem.sql, on one in-memory warehouse."""
    with warehouse.connect() as connection:
        connection.register("given", session_items)
        connection.execute("CREATE TEMPORARY TABLE session_items AS SELECT * FROM given")
        parameters = {"top_n": top_n, "min_support": min_support}
        return itemitem.sql_rows(connection, parameters, lambda name, step: step()).to_pylist()


def as_tuples(rows: list[dict]) -> list[tuple]:
    return [tuple(row.values()) for row in rows]


@pytest.mark.parametrize(("seed", "top_n", "min_support"), [(1, 5, 1), (2, 3, 2), (3, 20, 1), (4, 1, 3)])
def test_kernel_rows_are_the_sql_rows_in_their_order(seed, top_n, min_support):
    session_items = random_session_items(seed)
    expected = as_tuples(by_sql(session_items, top_n, min_support))
    assert len(expected) > 100
    assert by_kernel(session_items, top_n, min_support) == expected
    assert by_kernel(session_items, top_n, min_support, in_steps=True) == expected
    tenants = {row[0] for row in expected}
    assert tenants == {"pair", "shop"}  # a tenant of one product has nothing to recommend, not even popular


@pytest.mark.parametrize("shapes", [(("small", 2, 4),), (("small", 5, 40),)])
def test_a_product_seen_with_every_product(shapes):
    """One tenant whose products all meet: counting then fills its lists to the last product."""
    session_items = random_session_items(7, shapes)
    expected = as_tuples(by_sql(session_items, 10, 1))
    assert expected and by_kernel(session_items, 10, 1) == expected


@pytest.mark.parametrize("threads", [1, 2, 7, 64])
def test_any_number_of_threads_gives_the_same_rows(monkeypatch, threads):
    """How many shares the work is split into, whatever the machine's cores (64 shares: some empty)."""
    monkeypatch.setattr(pairs.numba, "get_num_threads", lambda: threads)
    session_items = random_session_items(5)
    assert by_kernel(session_items, 10, 1, in_steps=True) == as_tuples(by_sql(session_items, 10, 1))


def test_taking_every_session_away_leaves_nothing():
    with warehouse.connect() as connection:
        session_items = random_session_items(8)
        counts = counted(connection, Counts.none(), signed(session_items, 1))
        counts = counted(connection, counts, signed(session_items, -1))
        assert not counts.sessions.any() and counts.tenant_sessions == {}
        assert pairs.add(counts.base, counts.delta).pairs == 0
        assert itemitem.kernel_rows(counts, top_n=5, min_support=1).num_rows == 0


def test_the_transpose_is_the_same_for_any_split():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 6, size=50)
    basket_ptr = np.r_[0, np.cumsum(sizes)].astype(np.int32)
    basket_items = np.concatenate([rng.choice(30, size=s, replace=False) for s in sizes]).astype(np.int32)
    first = pairs.transpose(basket_ptr, basket_items, 30, 1)
    for shares in (2, 3, 7, 64):  # 64 shares for 50 sessions: some are empty
        again = pairs.transpose(basket_ptr, basket_items, 30, shares)
        for mine, theirs in zip(again[:3], first[:3]):
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
                    whole.count[whole.start[a] : whole.start[a] + whole.length[a]].tolist()))
        for a in range(3)
    }  # fmt: skip
    assert rows == {0: {1: 3, 2: 1}, 1: {0: 3, 2: 1}, 2: {0: 1, 1: 1}}
    padded = pa.array([[1, 1, 1, 1], *BASKETS], pa.list_(pa.int32())).slice(1)  # offsets start at 4
    sliced = pairs.count(padded, np.ones(4, np.int32), 3)
    for mine, theirs in zip(
        (sliced.start, sliced.length, sliced.related, sliced.count),
        (whole.start, whole.length, whole.related, whole.count),
    ):
        assert np.array_equal(mine, theirs)


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
    with pytest.raises(ValueError, match="at most the stored counts and two deltas"):
        cooccurrence.top_lists(items, (pairs.PairRows.empty(1),) * 4, top_n=5, min_support=1)


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
