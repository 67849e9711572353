"""Pair counts: for every product, the products seen with it in a session, and in how many sessions.

These are the counts of ``sql/pair_counts.sql`` without its ``min_support``
cut: the co-occurrence table behind every list. A build keeps them between
runs and changes them by delta: it counts the pairs of the sessions it adds
with sign +1 and those of the old versions of the sessions it re-opens or
drops with sign -1, and the lists are computed from the stored counts plus
that delta (``engine.udfs.cooccurrence``). Counts are integers, so the sum
is exact, and a build that adds an hour equals one that counts everything.

Rows are kept as a sparse matrix by product: row ``a`` is
``related[start[a] : start[a] + length[a]]`` with ``count`` beside it, in no
particular order (the lists rank by score and product, never by position).
Counting is a sparse ``X.T @ diag(sign) @ X``, row by row: each product's
sessions are walked and its co-occurring products counted in a dense
accumulator, on every core.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

ARRAYS = ("start", "length", "related", "count")
"""The arrays of :class:`PairRows`, each saved as ``<name>.npy``."""


@dataclass(frozen=True)
class PairRows:
    """Co-occurrence counts by product (item number): row ``a`` pairs ``related`` products with ``count`` sessions.

    A delta's counts are signed; a stored matrix's are positive. Rows past
    ``start.size`` (products first seen after these were counted) are empty.
    """

    start: np.ndarray  # int64, per item
    length: np.ndarray  # int32, per item
    related: np.ndarray  # int32, per pair
    count: np.ndarray  # int32, per pair

    @classmethod
    def empty(cls, n_items: int = 0) -> PairRows:
        return cls(
            np.zeros(n_items, np.int64), np.zeros(n_items, np.int32), np.empty(0, np.int32), np.empty(0, np.int32)
        )

    @property
    def pairs(self) -> int:
        """How many (product, related product) counts the rows hold."""
        return int(self.length.sum())

    def padded(self, n_items: int) -> PairRows:
        """The same rows over ``n_items`` products (the new ones with empty rows), so kernels index every item."""
        if n_items <= self.start.size:
            return self
        extra = n_items - self.start.size
        return PairRows(
            np.concatenate([self.start, np.zeros(extra, np.int64)]),
            np.concatenate([self.length, np.zeros(extra, np.int32)]),
            self.related,
            self.count,
        )

    def save(self, folder: Path) -> None:
        """Write the rows as one ``.npy`` file per array, packed (in item order, nothing between them)."""
        folder.mkdir(parents=True)
        packed = np.zeros(self.start.size, np.int64)
        np.cumsum(self.length[:-1], out=packed[1:])
        if np.array_equal(packed, self.start):
            related, count = self.related[: self.pairs], self.count[: self.pairs]
        else:
            related, count = _packed(self.start, self.length, self.related, self.count, packed)
        for name, array in zip(ARRAYS, (packed, self.length, related, count), strict=True):
            np.save(folder / f"{name}.npy", array)

    @classmethod
    def load(cls, folder: Path) -> PairRows:
        """Rows saved by :meth:`save`, memory-mapped read-only (a build reads each row once)."""
        return cls(*(np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r")) for name in ARRAYS))


def count(baskets: pa.ListArray, signs: np.ndarray, n_items: int) -> PairRows:
    """Count the pairs of each basket (a session's distinct item numbers), weighted by its sign (+1 or -1).

    Args:
        baskets: one list of distinct item numbers (0..n_items-1) per session, without nulls.
        signs: +1 or -1 per basket: added sessions count, removed (old) sessions count negatively.
        n_items: how many items there are; the rows cover all of them.

    Returns:
        The nonzero sums, as rows by item.

    Raises:
        ValueError: input the compiled loops cannot take (they have no bounds checks).
    """
    lists = baskets.combine_chunks() if isinstance(baskets, pa.ChunkedArray) else baskets
    used = lists.flatten()
    if lists.null_count or used.null_count:
        msg = "baskets must be lists of item numbers without nulls"
        raise ValueError(msg)
    basket_ptr = lists.offsets.to_numpy()
    basket_items = used.to_numpy().astype(np.int32, copy=False)
    if basket_items.size and not (basket_items.min() >= 0 and basket_items.max() < n_items):
        msg = f"baskets must be lists of item numbers 0..{n_items - 1}"
        raise ValueError(msg)
    signs = np.asarray(signs, dtype=np.int32)
    if signs.size != len(lists):
        msg = f"{signs.size} signs for {len(lists)} baskets"
        raise ValueError(msg)
    basket_ptr = basket_ptr - basket_ptr[0]  # a sliced list array: offsets into the flattened values
    threads = numba.get_num_threads()
    item_ptr, item_baskets, width, repeated = transpose(basket_ptr, basket_items, n_items, min(threads, SHARES))
    if repeated:
        msg = "a basket holds the same item twice: baskets are sessions' distinct products"
        raise ValueError(msg)
    # A row holds at most one entry per co-occurrence of its item (itself left out), plus one slot that the
    # branch-free writes of _count_rows may fill and leave (it writes each product before deciding to keep it).
    bound = width - np.diff(item_ptr) + 1
    start = np.zeros(n_items, np.int64)
    np.cumsum(bound[:-1], out=start[1:])
    total = int(bound.sum())
    related = np.empty(total, np.int32)
    counts = np.empty(total, np.int32)
    length = _count_rows(basket_ptr, basket_items, signs, item_ptr, item_baskets, start, related, counts, threads)
    start, related, counts = compacted_in_place(start, length, related, counts)
    return PairRows(start, length, related, counts)


@numba.njit(cache=True, parallel=True)
def transpose(basket_ptr: np.ndarray, basket_items: np.ndarray, n_items: int, shares: int):
    """Item -> baskets adjacency (CSR) from basket -> items, by a counting sort on up to ``shares`` cores.

    Each share sorts a contiguous range of baskets into its own slice of each
    item's list, so every list comes out in basket order, as one thread would
    write it. Also returns each item's width (the sum of its baskets' sizes,
    which bounds its row of pair counts) and whether any basket holds an item
    twice, which the counting must not be given.
    """
    n_baskets = basket_ptr.size - 1
    bounds = np.array([t * n_baskets // shares for t in range(shares + 1)])
    # Per share and item, side by side in one cache line: how many of its baskets hold the item (then,
    # in place, where the next one goes), the sum of their sizes, and the last basket seen (+ 1). Int32
    # suffices: Arrow's list offsets are int32, so no count or basket number reaches 2**31.
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
    width = np.zeros(n_items, dtype=np.int64)
    running = 0
    for i in range(n_items):
        item_ptr[i] = running
        for t in range(shares):
            count = tally[t, i, 0]
            tally[t, i, 0] = running
            running += count
            width[i] += tally[t, i, 1]
    item_ptr[n_items] = running
    item_baskets = np.empty(basket_items.size, dtype=np.int32)
    for t in numba.prange(shares):
        for basket in range(bounds[t], bounds[t + 1]):
            for q in range(basket_ptr[basket], basket_ptr[basket + 1]):
                item = basket_items[q]
                item_baskets[tally[t, item, 0]] = basket
                tally[t, item, 0] += 1
    return item_ptr, item_baskets, width, repeated.any()


@numba.njit(cache=True, parallel=True)
def _count_rows(basket_ptr, basket_items, signs, item_ptr, item_baskets, start, related, counts, threads):
    """Fill each item's row at ``start[a]`` with its nonzero signed counts; return the row lengths.

    Items are dealt to the threads in turn (even shares). Each thread keeps a
    dense accumulator over all items and the list of items it touched for the
    current row; ``seen`` marks an item as touched for row ``a`` (a signed
    count can return to zero, so the count itself cannot say so).
    """
    n_items = item_ptr.size - 1
    length = np.zeros(n_items, dtype=np.int32)
    n_chunks = max(1, min(n_items, threads))
    for chunk in numba.prange(n_chunks):
        accumulated = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)  # + 1: each product is written one past those kept
        for a in range(chunk, n_items, n_chunks):
            n_touched = 0
            for j in range(item_ptr[a], item_ptr[a + 1]):
                basket = item_baskets[j]
                sign = signs[basket]
                for q in range(basket_ptr[basket], basket_ptr[basket + 1]):
                    b = basket_items[q]
                    touched[n_touched] = b
                    n_touched += seen[b] != a
                    seen[b] = a
                    accumulated[b] += sign
            out = start[a]
            for t in range(n_touched):
                b = touched[t]
                c = accumulated[b]
                accumulated[b] = 0
                related[out] = b
                counts[out] = c
                out += (c != 0) & (b != a)
            length[a] = out - start[a]
    return length


@numba.njit(cache=True)
def _move_rows(start, length, related, counts):
    """Move every row down to follow the one before (rows only ever move to lower positions); return new starts."""
    packed = np.empty(start.size, dtype=np.int64)
    out = 0
    for a in range(start.size):
        packed[a] = out
        source = start[a]
        for k in range(length[a]):
            related[out + k] = related[source + k]
            counts[out + k] = counts[source + k]
        out += length[a]
    return packed


def compacted_in_place(start, length, related, counts):
    """The rows packed at the front of their arrays, which are then shrunk (freeing the unused tail)."""
    packed = _move_rows(start, length, related, counts)
    total = int(length.sum())
    related.resize(total, refcheck=False)
    counts.resize(total, refcheck=False)
    return packed, related, counts


@numba.njit(cache=True, parallel=True)
def _packed(start, length, related, counts, packed):
    """Copies of the rows at the positions ``packed`` (for saving rows that have gaps between them)."""
    total = packed[-1] + length[-1] if start.size else 0
    out_related = np.empty(total, dtype=np.int32)
    out_counts = np.empty(total, dtype=np.int32)
    for a in numba.prange(start.size):
        for k in range(length[a]):
            out_related[packed[a] + k] = related[start[a] + k]
            out_counts[packed[a] + k] = counts[start[a] + k]
    return out_related, out_counts


SHARES = 8
"""The most cores the transpose uses: its scatter is bound by memory beyond a few, and each share holds three int32 per item."""


def add(x: PairRows, y: PairRows) -> PairRows:
    """The sums of two sets of counts (a stored matrix and a delta, or two deltas), without zero sums."""
    n_items = max(x.start.size, y.start.size)
    x, y = x.padded(n_items), y.padded(n_items)
    if not y.pairs:
        return x
    if not x.pairs:
        return y
    bound = x.length.astype(np.int64) + y.length + 1  # + 1: the slot the branch-free writes may fill and leave
    start = np.zeros(n_items, np.int64)
    np.cumsum(bound[:-1], out=start[1:])
    total = int(bound.sum())
    related = np.empty(total, np.int32)
    counts = np.empty(total, np.int32)
    length = _add_rows(
        x.start, x.length, x.related, x.count, y.start, y.length, y.related, y.count, start, related, counts,
        numba.get_num_threads(),
    )  # fmt: skip
    start, related, counts = compacted_in_place(start, length, related, counts)
    return PairRows(start, length, related, counts)


def transposed(rows: PairRows) -> PairRows:
    """The counts with the roles swapped: row ``b`` holds ``a`` with the count that row ``a`` holds for ``b``."""
    start, length, related, count = _transposed(rows.start, rows.length, rows.related, rows.count)
    return PairRows(start, length, related, count)


@numba.njit(cache=True)
def _transposed(start, length, related, count):
    """:func:`transposed` by a counting sort over the rows' products: starts, lengths, related products, counts."""
    n_items = start.size
    sizes = np.zeros(n_items + 1, dtype=np.int64)
    for a in range(n_items):
        for j in range(start[a], start[a] + length[a]):
            sizes[related[j] + 1] += 1
    out_start = np.cumsum(sizes)[:-1]
    fill = out_start.copy()
    out_related = np.empty(sizes.sum(), dtype=np.int32)
    out_count = np.empty(out_related.size, dtype=np.int32)
    for a in range(n_items):
        for j in range(start[a], start[a] + length[a]):
            b = related[j]
            out_related[fill[b]] = a
            out_count[fill[b]] = count[j]
            fill[b] += 1
    return out_start, (fill - out_start).astype(np.int32), out_related, out_count


@numba.njit(cache=True, inline="always")
def accumulate(start, length, related, count, a, n_touched, accumulated, seen, touched):
    """Add row ``a`` of one set of counts into a dense accumulator; return how many items are now touched.

    ``seen[b] == a`` marks ``b`` as touched for row ``a``: a signed sum can
    return to zero, so the accumulator itself cannot say so.
    """
    for j in range(start[a], start[a] + length[a]):
        b = related[j]
        touched[n_touched] = b
        n_touched += seen[b] != a
        seen[b] = a
        accumulated[b] += count[j]
    return n_touched


@numba.njit(cache=True, parallel=True)
def _add_rows(
    start_x, length_x, related_x, count_x, start_y, length_y, related_y, count_y, start, related, counts, threads
):
    n_items = start.size
    length = np.zeros(n_items, dtype=np.int32)
    n_chunks = max(1, min(n_items, threads))
    for chunk in numba.prange(n_chunks):
        accumulated = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)
        for a in range(chunk, n_items, n_chunks):
            n_touched = accumulate(start_x, length_x, related_x, count_x, a, 0, accumulated, seen, touched)
            n_touched = accumulate(start_y, length_y, related_y, count_y, a, n_touched, accumulated, seen, touched)
            out = start[a]
            for t in range(n_touched):
                b = touched[t]
                c = accumulated[b]
                accumulated[b] = 0
                related[out] = b
                counts[out] = c
                out += c != 0
            length[a] = out - start[a]
    return length
