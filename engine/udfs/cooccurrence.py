"""The co-occurrence kernel: ``sql/pair_counts.sql`` to ``sql/itemitem.sql`` in one compiled pass.

The SQL self-join materialises every pair of products seen together (tens of
millions of rows at the shop's size) only to keep the top few per product.
This kernel computes the same top-N lists without ever holding all pairs: for
each product it walks the sessions that contain it, counts the co-occurring
products in a dense accumulator (a sparse ``X.T @ X`` row, Gustavson-style),
scores the candidates with the three measures, and keeps the best ``top_n``
of each in a small sorted buffer. Products are dealt to the cores in turn.
Most of the time goes to fetching sessions scattered in memory, so the loops
are written for the CPU to keep many fetches in flight (no branch waits on
one); each says what that was worth.

It returns exactly the rows of ``itemitem.sql`` (with ``ranked_pairs.sql``
and ``popular.sql`` under it): same counts, same scores (the same compiled
:func:`~engine.udfs.llr.llr`), same tie-break by product id, and already in
the table's ``(tenant, algorithm, product_id, rank)`` order, so the build
copies them into ``itemitem`` without a sort. The tests compare both paths.
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.udfs.llr import from_entropies, x_log_x_table

ALGORITHMS = ("cooccurrence", "jaccard", "llr", "popular")
"""The kernel's algorithms in row order, which is also their name order; the counting arrays' first axis holds the first three."""
POPULAR = ALGORITHMS.index("popular")


def itemitem_rows(items: pa.Table, baskets: pa.ChunkedArray, *, top_n: int, min_support: int) -> pa.Table:
    """Top ``top_n`` related products per product and algorithm: the rows of ``itemitem``.

    Args:
        items: the rows of ``sql/item_index.sql`` (``item`` numbered 0..n-1 in order).
        baskets: the ``items`` list column of ``sql/baskets.sql``.
        top_n: list length per product.
        min_support: the fewest sessions a pair must share.

    Returns:
        A table with the columns and types of ``sql/itemitem.sql``, ordered by
        ``(tenant, algorithm, product_id, rank)``.
    """
    lists = baskets.combine_chunks() if isinstance(baskets, pa.ChunkedArray) else baskets
    _check(items, lists)
    # Offsets (int32, as Arrow keeps them: no copy) index the whole child array, even for a slice.
    basket_ptr = lists.offsets.to_numpy()
    basket_items = lists.values.to_numpy().astype(np.int32, copy=False)
    sessions = items.column("sessions").to_numpy().astype(np.int64)
    tenant_sessions = items.column("tenant_sessions").to_numpy().astype(np.int64)
    threads = numba.get_num_threads()
    item_ptr, item_baskets, widest, repeated = _transpose(
        basket_ptr, basket_items, sessions.size, min(threads, _TRANSPOSE_SHARES)
    )
    if repeated:
        msg = "a basket holds the same item twice: baskets are sessions' distinct products"
        raise ValueError(msg)
    if not np.array_equal(np.diff(item_ptr), sessions):
        msg = "baskets and item counts disagree: each product's sessions must be the baskets that hold it"
        raise ValueError(msg)
    related, cooccurrence, score, length = _top_related(
        basket_ptr, basket_items, item_ptr, item_baskets, widest, sessions, tenant_sessions, min_support, top_n, threads
    )
    tenants = _tenant_blocks(items)
    return _as_table(items, tenants, related, cooccurrence, score, length, _leaders(tenants, sessions, top_n))


def _check(items: pa.Table, lists: pa.ListArray) -> None:
    """Refuse input the compiled loops would read or write out of bounds with (they have no bounds checks)."""
    numbers = items.column("item").to_numpy()
    if not np.array_equal(numbers, np.arange(numbers.size)):
        msg = "items must be numbered 0..n-1 in row order, as sql/item_index.sql numbers them"
        raise ValueError(msg)
    used = lists.flatten()
    if (
        lists.null_count
        or used.null_count
        or (len(used) and not (pc.min(used).as_py() >= 0 and pc.max(used).as_py() < numbers.size))
    ):
        msg = f"baskets must be lists of item numbers 0..{numbers.size - 1}, without nulls"
        raise ValueError(msg)


def _tenant_blocks(items: pa.Table) -> list[tuple[int, int]]:
    """(first, end) item numbers of each tenant; items are numbered in (tenant, product_id) order."""
    tenant = items.column("tenant").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, tenant[1:] != tenant[:-1], True]) if tenant.size else np.array([0])
    return list(zip(starts[:-1].tolist(), starts[1:].tolist()))


def _leaders(tenants, sessions: np.ndarray, top_n: int) -> np.ndarray:
    """Each tenant's ``top_n + 1`` most-viewed products (ties: lower product first), -1 where it has fewer.

    ``sql/popular.sql`` gives each product the first ``top_n`` of them after
    leaving itself out; :func:`_flatten` writes those rows from this table.
    """
    leaders = np.full((len(tenants), top_n + 1), -1, dtype=np.int32)
    for t, (first, end) in enumerate(tenants):
        best = first + np.lexsort((np.arange(end - first), -sessions[first:end]))[: top_n + 1]
        leaders[t, : best.size] = best
    return leaders


@numba.njit(cache=True, parallel=True)
def _transpose(
    basket_ptr: np.ndarray, basket_items: np.ndarray, n_items: int, shares: int
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Item -> baskets adjacency (CSR) from basket -> items, by a counting sort on up to ``shares`` cores.

    Each share sorts a contiguous range of baskets into its own slice of each
    item's list, so every list comes out in basket order, as one thread would
    write it. Also returns the most co-occurrences any one product has (the
    sum of its sessions' sizes), which is the buffer each thread of the
    counting pass needs: summed here, in basket order, it costs nothing next
    to the scattered reads it would take later. And whether any basket holds
    an item twice, which the counting pass must not be given.
    """
    n_baskets = basket_ptr.size - 1
    bounds = np.array([t * n_baskets // shares for t in range(shares + 1)])
    # Per share and item, side by side in one cache line: how many of its baskets hold the item (then,
    # in place, where the next one goes), the sum of their sizes, and the last basket seen (+ 1). Int32
    # suffices: Arrow's list offsets are int32, so no count or basket number reaches 2**31. A basket
    # that holds an item twice would count its pairs twice, past the sessions they are drawn from,
    # and the LLR would look its terms up out of range: it is flagged here and refused.
    tally = np.zeros((shares, n_items, 3), dtype=np.int32)
    repeated = np.zeros(shares, dtype=np.bool_)
    for t in numba.prange(shares):
        twice = False
        for basket in range(bounds[t], bounds[t + 1]):
            size = basket_ptr[basket + 1] - basket_ptr[basket]
            for q in range(basket_ptr[basket], basket_ptr[basket + 1]):
                item = basket_items[q]
                tally[t, item, 0] += 1
                tally[t, item, 1] += size
                twice |= tally[t, item, 2] == basket + 1
                tally[t, item, 2] = basket + 1
        repeated[t] = twice
    item_ptr = np.empty(n_items + 1, dtype=np.int64)
    running = 0
    widest = 0
    for i in range(n_items):
        item_ptr[i] = running
        width = 0
        for t in range(shares):
            count = tally[t, i, 0]
            tally[t, i, 0] = running
            running += count
            width += tally[t, i, 1]
        widest = max(widest, width)
    item_ptr[n_items] = running
    item_baskets = np.empty(basket_items.size, dtype=np.int32)
    for t in numba.prange(shares):
        for basket in range(bounds[t], bounds[t + 1]):
            for q in range(basket_ptr[basket], basket_ptr[basket + 1]):
                item = basket_items[q]
                item_baskets[tally[t, item, 0]] = basket
                tally[t, item, 0] += 1
    return item_ptr, item_baskets, widest, repeated.any()


@numba.njit(cache=True, inline="always")
def _ahead(score_a: float, item_a: int, score_b: float, item_b: int) -> bool:
    """Does (score_a, item_a) rank before (score_b, item_b)? Higher score first, then lower product."""
    return score_a > score_b or (score_a == score_b and item_a < item_b)


@numba.njit(cache=True, inline="always")
def _offer(related, cooccurrence, score, kept, algorithm, item, candidate, count, value):
    """Insert a candidate into one product's sorted top list if it makes the cut; return the new length."""
    top_n = related.shape[2]
    if kept == top_n and not _ahead(
        value, candidate, score[algorithm, item, kept - 1], related[algorithm, item, kept - 1]
    ):
        return kept
    slot = kept if kept < top_n else top_n - 1
    while slot > 0 and _ahead(value, candidate, score[algorithm, item, slot - 1], related[algorithm, item, slot - 1]):
        related[algorithm, item, slot] = related[algorithm, item, slot - 1]
        cooccurrence[algorithm, item, slot] = cooccurrence[algorithm, item, slot - 1]
        score[algorithm, item, slot] = score[algorithm, item, slot - 1]
        slot -= 1
    related[algorithm, item, slot] = candidate
    cooccurrence[algorithm, item, slot] = count
    score[algorithm, item, slot] = value
    return min(kept + 1, top_n)


@numba.njit(cache=True, parallel=True)
def _top_related(
    basket_ptr, basket_items, item_ptr, item_baskets, widest, sessions, tenant_sessions, min_support, top_n, threads
):
    n_items = sessions.size
    # Entries past a list's length are never read, so only the lengths start at zero.
    related = np.empty((POPULAR, n_items, top_n), dtype=np.int32)
    cooccurrence = np.empty((POPULAR, n_items, top_n), dtype=np.int32)
    score = np.empty((POPULAR, n_items, top_n), dtype=np.float64)
    length = np.zeros((POPULAR, n_items), dtype=np.int32)
    # Every count in the LLR's 2x2 tables is at most the tenant's sessions, so its
    # xLogX terms are looked up, and each product's margin entropy is computed once.
    xlx = x_log_x_table(tenant_sessions.max() if n_items else 0)
    margin = np.empty(n_items, dtype=np.float64)
    for i in range(n_items):
        margin[i] = xlx[tenant_sessions[i]] - xlx[sessions[i]] - xlx[tenant_sessions[i] - sessions[i]]
    # Each product's co-occurring products are first copied into one buffer, then counted. Fetching a
    # session's products is a cache miss (sessions are scattered in memory), and the CPU overlaps such
    # misses only where no branch waits on one: so the copy first reads where each session lies, then
    # every session's first product (each session of a's holds a, so none is empty), then the rest.
    # At 20M events that made the copying 1.8x (one thread) to 2.2x (two) faster than a loop per session.
    most_sessions = sessions.max() if n_items else 0  # the baskets that hold a product (checked equal)
    # One share per thread, so each thread allocates its buffers once.
    n_chunks = max(1, min(n_items, threads))
    for chunk in numba.prange(n_chunks):
        counts = np.zeros(n_items, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)  # + 1: counting writes one past the products it keeps
        shared = np.empty(n_items, dtype=np.int32)
        together = np.empty(widest, dtype=np.int32)
        begin = np.empty(most_sessions, dtype=np.int64)
        end = np.empty(most_sessions, dtype=np.int64)
        for a in range(chunk, n_items, n_chunks):  # every n_chunks-th product: the threads get even shares
            n_sessions = item_ptr[a + 1] - item_ptr[a]
            for j in range(n_sessions):
                basket = item_baskets[item_ptr[a] + j]
                begin[j] = basket_ptr[basket]
                end[j] = basket_ptr[basket + 1]
            for j in range(n_sessions):
                together[j] = basket_items[begin[j]]
            n_together = n_sessions
            for j in range(n_sessions):
                for q in range(begin[j] + 1, end[j]):
                    together[n_together] = basket_items[q]
                    n_together += 1
            # Counted without branches (each product is written to `touched` but kept there only the
            # first time), then filtered the same way into (product, sessions shared) candidates: a
            # branch on a count the CPU cannot predict costs more than the writes. Copying, counting
            # and resetting took 0.68 s before, 0.50 s after, on two threads at 20M events.
            n_touched = 0
            for t in range(n_together):
                b = together[t]
                touched[n_touched] = b
                n_touched += counts[b] == 0
                counts[b] += 1
            n_candidates = 0
            for t in range(n_touched):
                b = touched[t]
                k11 = counts[b]
                counts[b] = 0
                touched[n_candidates] = b
                shared[n_candidates] = k11
                n_candidates += (k11 >= min_support) & (b != a)
            kept = 0
            na = sessions[a]
            n = tenant_sessions[a]
            for t in range(n_candidates):
                b = touched[t]
                k11 = shared[t]
                nb = sessions[b]
                # llr(k11, k12, k21, k22) with k12 = nb - k11, k21 = na - k11, k22 = n - na - nb + k11.
                matrix = xlx[n] - xlx[k11] - xlx[nb - k11] - xlx[na - k11] - xlx[n - na - nb + k11]
                _offer(related, cooccurrence, score, kept, 0, a, b, k11, float(k11))
                _offer(related, cooccurrence, score, kept, 1, a, b, k11, k11 / float(na + nb - k11))
                kept = _offer(
                    related, cooccurrence, score, kept, 2, a, b, k11, from_entropies(margin[b], margin[a], matrix)
                )
            length[:, a] = kept
    return related, cooccurrence, score, length


def _as_table(items: pa.Table, tenants, related, cooccurrence, score, length, leaders) -> pa.Table:
    """The kernel's (algorithm, item, rank) arrays and the tenants' leaders as rows in (tenant, algorithm, product, rank) order.

    Every column that repeats a product's attribute is an Arrow dictionary
    indexed by the item number: the text columns over the item table's
    strings, ``product_sessions`` and ``related_sessions`` over its session
    counts. So nothing is copied per row here but the numbers that differ per
    row, which :func:`_flatten` writes in one pass; DuckDB materialises the
    rest once, on insert.
    """
    first = np.array([f for f, _ in tenants], dtype=np.int64)
    end = np.array([e for _, e in tenants], dtype=np.int64)
    sessions = items.column("sessions").combine_chunks()
    tenant, algorithm, item, rank, other, count, counted, value = _flatten(
        first, end, length, related, cooccurrence, score, leaders, sessions.to_numpy()
    )
    names = items.column("tenant").take(first) if len(tenants) else pa.array([], pa.string())
    product_ids = items.column("product_id").combine_chunks()
    validity = pa.py_buffer(counted)
    table = pa.table(
        {
            # Indices made by _flatten from the same arrays: in range by construction.
            "tenant": pa.DictionaryArray.from_arrays(tenant, names, safe=False),
            "algorithm": pa.DictionaryArray.from_arrays(algorithm, ALGORITHMS, safe=False),
            "product_id": pa.DictionaryArray.from_arrays(item, product_ids, safe=False),
            "rank": rank,
            "related_product_id": pa.DictionaryArray.from_arrays(other, product_ids, safe=False),
            "distance_score": value,
            "cooccurrence": pa.Array.from_buffers(
                pa.int64(), count.size, [validity, pa.py_buffer(count)]
            ),  # NULL for popular
            "product_sessions": pa.DictionaryArray.from_arrays(item, sessions, safe=False),
            "related_sessions": pa.DictionaryArray.from_arrays(other, sessions, safe=False),
        }
    )
    # Many small batches let DuckDB read the table on every core.
    return pa.Table.from_batches(table.to_batches(max_chunksize=_BATCH_ROWS), schema=table.schema)


@numba.njit(cache=True, parallel=True)
def _flatten(first, end, length, related, cooccurrence, score, leaders, sessions):
    """Gather the kept list entries, tenant by tenant, algorithm by algorithm, product by product.

    The co-occurrence algorithms' entries come from the counting pass's
    arrays; ``popular``'s are the tenant's leaders with the product itself
    left out (or, for a product that is not among them, the last leader left out).
    Each (tenant, algorithm) block is written by one thread at the offset the
    blocks before it end at, so the rows come out in order on every core.
    """
    n_algorithms = length.shape[0] + 1
    blocks = first.size * n_algorithms
    # Every product of a tenant gets all but one of its leaders.
    popular = np.maximum(0, (leaders >= 0).sum(axis=1) - 1)
    starts = np.zeros(blocks + 1, dtype=np.int64)
    for block in range(blocks):
        t, a = block // n_algorithms, block % n_algorithms
        size = popular[t] * (end[t] - first[t]) if a == POPULAR else length[a, first[t] : end[t]].sum()
        starts[block + 1] = starts[block] + size
    total = starts[blocks]
    tenant = np.empty(total, dtype=np.int32)
    algorithm = np.empty(total, dtype=np.int8)
    item = np.empty(total, dtype=np.int32)
    rank = np.empty(total, dtype=np.int32)
    other = np.empty(total, dtype=np.int32)
    count = np.zeros(total, dtype=np.int64)
    value = np.empty(total, dtype=np.float64)
    # The validity bitmap of `count` (Arrow's order: least significant bit first): set for every
    # row but popular's, which have no count. Blocks are ranges of rows, so it is set range by range.
    counted = np.zeros((total + 7) // 8, dtype=np.uint8)
    for block in range(blocks):
        if block % n_algorithms != POPULAR:
            for row in range(starts[block], starts[block + 1]):
                counted[row >> 3] |= np.uint8(1 << (row & 7))
    for block in numba.prange(blocks):
        t, a = block // n_algorithms, block % n_algorithms
        row = starts[block]
        for i in range(first[t], end[t]):
            kept = popular[t] if a == POPULAR else length[a, i]
            skip = 0
            for slot in range(kept):
                if a == POPULAR:
                    skip += leaders[t, slot + skip] == i
                    b = leaders[t, slot + skip]
                    value[row] = sessions[b]
                else:
                    b = related[a, i, slot]
                    count[row] = cooccurrence[a, i, slot]
                    value[row] = score[a, i, slot]
                tenant[row] = t
                algorithm[row] = a
                item[row] = i
                rank[row] = slot + 1
                other[row] = b
                row += 1
    return tenant, algorithm, item, rank, other, count, counted, value


_BATCH_ROWS = 122_880  # DuckDB's row group size
_TRANSPOSE_SHARES = 8
"""The most cores the transpose uses: its scatter is bound by memory beyond a few, and each share holds three int32 per item."""
