"""The co-occurrence kernel against the SQL path on shapes the example shops do not have, and its thread independence.

The kernel splits work by thread (the transpose by ranges of sessions, the
counting by products dealt in turn) and writes ``popular`` from each tenant's
leaders; none of that may change a row. Tenants of one and two products,
sessions of one product, ties everywhere, and more threads than sessions.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pytest

from engine import itemitem, sqlfiles, warehouse
from engine.udfs import cooccurrence


def random_session_items(seed: int) -> pa.Table:
    """Sessions over three tenants: one product, two products, and 40 products with a popular head."""
    rng = np.random.default_rng(seed)
    rows = {"tenant": [], "session_id": [], "product_id": []}
    for tenant, products, sessions in (("lone", 1, 3), ("pair", 2, 6), ("shop", 40, 300)):
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


def test_threads_change_nothing():
    session_items = random_session_items(5)
    numba.set_num_threads(1)
    try:
        one, _ = both_paths(session_items, 10, 1)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    two, _ = both_paths(session_items, 10, 1)
    assert one == two


def test_the_transpose_is_the_same_for_any_split():
    rng = np.random.default_rng(6)
    sizes = rng.integers(1, 6, size=50)
    basket_ptr = np.r_[0, np.cumsum(sizes)].astype(np.int32)
    basket_items = np.concatenate([rng.choice(30, size=s, replace=False) for s in sizes]).astype(np.int32)
    first = cooccurrence._transpose(basket_ptr, basket_items, 30, 1)
    for threads in (2, 3, 7, 64):  # 64 shares for 50 sessions: some are empty
        again = cooccurrence._transpose(basket_ptr, basket_items, 30, threads)
        assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1]) and again[2] == first[2]
    # Each product's sessions, in session order, and the widest product's co-occurrences.
    item_ptr, item_baskets, widest = first
    for item in range(30):
        expected = [b for b in range(50) if item in basket_items[basket_ptr[b]:basket_ptr[b + 1]]]
        assert item_baskets[item_ptr[item]:item_ptr[item + 1]].tolist() == expected
    assert widest == max(sum(sizes[b] for b in range(50) if i in basket_items[basket_ptr[b]:basket_ptr[b + 1]]) for i in range(30))


def test_a_sliced_list_array_gives_the_rows_of_the_whole_one():
    items = pa.table({
        "item": pa.array([0, 1, 2], pa.int32()), "tenant": ["t"] * 3, "product_id": ["a", "b", "c"],
        "sessions": pa.array([3, 3, 1], pa.int64()), "tenant_sessions": pa.array([4, 4, 4], pa.int64()),
    })
    baskets = [[2], [0, 1], [0, 1], [0, 1, 2]]
    whole = cooccurrence.itemitem_rows(items, pa.array(baskets, pa.list_(pa.int32())), top_n=5, min_support=1)
    padded = pa.array([[1, 1, 1, 1]] + baskets, pa.list_(pa.int32())).slice(1)  # offsets start at 4
    assert cooccurrence.itemitem_rows(items, padded, top_n=5, min_support=1).equals(whole)
