"""The co-occurrence kernel against the SQL path on shapes the example shops do not have, and its guards.

The kernel splits work by thread (the transpose by ranges of sessions, the
counting by products dealt in turn) and writes ``popular`` from each tenant's
leaders; none of that may change a row. Tenants of one and two products, a
product seen with every other, sessions of one product, ties everywhere, and
more shares than sessions. Its compiled loops have no bounds checks, so the
same cases also run uncompiled, where NumPy checks every index, and input
that would break them is refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine import sqlfiles
from engine.pipeline import itemitem
from engine.publish import warehouse
from engine.udfs import cooccurrence

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


def both_paths(session_items: pa.Table, top_n: int, min_support: int) -> tuple[list, list]:
    """itemitem by the kernel and by sql/pair_counts.sql .. itemitem.sql, on one in-memory warehouse."""
    parameters = {"top_n": top_n, "min_support": min_support}
    with warehouse.connect() as connection:
        connection.register("given", session_items)
        connection.execute("CREATE TABLE session_items AS SELECT * FROM given")
        for name in ("item_counts", "tenant_sessions"):
            sqlfiles.create_table(connection, name)
        kernel = itemitem.kernel_rows(connection, top_n=top_n, min_support=min_support)
        connection.register("kernel", kernel)
        by_kernel = connection.execute("SELECT * FROM kernel").fetchall()
        for name in ("pair_counts", "ranked_pairs", "popular"):
            sqlfiles.create_table(connection, name, parameters, temporary=True)
        by_sql = sqlfiles.query(connection, "itemitem").fetchall()
    return by_kernel, by_sql


@pytest.mark.parametrize(("seed", "top_n", "min_support"), [(1, 5, 1), (2, 3, 2), (3, 20, 1), (4, 1, 3)])
def test_kernel_rows_are_the_sql_rows_in_their_order(seed, top_n, min_support):
    by_kernel, by_sql = both_paths(random_session_items(seed), top_n, min_support)
    assert len(by_sql) > 100
    assert by_kernel == by_sql
    tenants = {row[0] for row in by_kernel}
    assert tenants == {"pair", "shop"}  # a tenant of one product has nothing to recommend, not even popular


@pytest.mark.parametrize("shapes", [(("small", 2, 4),), (("small", 5, 40),)])
def test_a_product_seen_with_every_product(shapes):
    """One tenant whose products all meet: counting then fills its lists to the last product."""
    by_kernel, by_sql = both_paths(random_session_items(7, shapes), 10, 1)
    assert by_kernel == by_sql and by_kernel


@pytest.mark.parametrize("threads", [1, 2, 7, 64])
def test_any_number_of_threads_gives_the_same_rows(monkeypatch, threads):
    """How many shares the work is split into, whatever the machine's cores (64 shares: some empty)."""
    monkeypatch.setattr(cooccurrence.numba, "get_num_threads", lambda: threads)
    by_kernel, by_sql = both_paths(random_session_items(5), 10, 1)
    assert by_kernel == by_sql


def test_the_transpose_is_the_same_for_any_split():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 6, size=50)
    basket_ptr = np.r_[0, np.cumsum(sizes)].astype(np.int32)
    basket_items = np.concatenate([rng.choice(30, size=s, replace=False) for s in sizes]).astype(np.int32)
    first = cooccurrence._transpose(basket_ptr, basket_items, 30, 1)
    for shares in (2, 3, 7, 64):  # 64 shares for 50 sessions: some are empty
        again = cooccurrence._transpose(basket_ptr, basket_items, 30, shares)
        assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1]) and again[2:] == first[2:]
    # Each product's sessions, in session order, the widest product's co-occurrences, and no repeats.
    item_ptr, item_baskets, widest, repeated = first
    assert not repeated
    holding = {
        item: [b for b in range(50) if item in basket_items[basket_ptr[b] : basket_ptr[b + 1]]] for item in range(30)
    }
    for item, baskets in holding.items():
        assert item_baskets[item_ptr[item] : item_ptr[item + 1]].tolist() == baskets
    assert widest == max(sum(sizes[b] for b in baskets) for baskets in holding.values())


def items_table(sessions: list[int], tenant_sessions: int, numbers: list[int] | None = None) -> pa.Table:
    n = len(sessions)
    return pa.table(
        {
            "item": pa.array(numbers if numbers is not None else range(n), pa.int32()),
            "tenant": ["t"] * n,
            "product_id": [f"p{i}" for i in range(n)],
            "sessions": pa.array(sessions, pa.int64()),
            "tenant_sessions": pa.array([tenant_sessions] * n, pa.int64()),
        }
    )


BASKETS = [[2], [0, 1], [0, 1], [0, 1, 2]]


def test_a_sliced_list_array_gives_the_rows_of_the_whole_one():
    items = items_table([3, 3, 2], 4)
    whole = cooccurrence.itemitem_rows(items, pa.array(BASKETS, pa.list_(pa.int32())), top_n=5, min_support=1)
    padded = pa.array([[1, 1, 1, 1]] + BASKETS, pa.list_(pa.int32())).slice(1)  # offsets start at 4
    assert cooccurrence.itemitem_rows(items, padded, top_n=5, min_support=1).equals(whole)


@pytest.mark.parametrize(
    ("items", "baskets", "message"),
    [
        (items_table([3, 3, 2], 4, [0, 2, 1]), BASKETS, "numbered 0..n-1 in row order"),
        (items_table([3, 3, 2], 4), [[3], [0, 1], [0, 1], [0, 1, 2]], "lists of item numbers 0..2"),
        (items_table([3, 3, 2], 4), [[-1], [0, 1], [0, 1], [0, 1, 2]], "lists of item numbers 0..2"),
        (items_table([3, 3, 2], 4), [None, [0, 1], [0, 1], [0, 1, 2]], "without nulls"),
        (items_table([3, 3, 2], 4), [[None], [0, 1], [0, 1], [0, 1, 2]], "without nulls"),
        (items_table([3, 3, 1], 4), BASKETS, "baskets and item counts disagree"),
        (items_table([3, 4, 2], 4), [[2], [0, 1], [0, 1, 1], [0, 1, 2]], "holds the same item twice"),
    ],
    ids=[
        "unordered items",
        "item too large",
        "negative item",
        "null basket",
        "null item",
        "stale counts",
        "repeated item",
    ],
)
def test_input_the_compiled_loops_cannot_take_is_refused(items, baskets, message):
    with pytest.raises(ValueError, match=message):
        cooccurrence.itemitem_rows(items, pa.array(baskets, pa.list_(pa.int32())), top_n=5, min_support=1)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already uncompiled")
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
