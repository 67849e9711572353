"""Counts of products that follow each other in sessions: what the sequence-aware lists rank by.

A session's steps (``sql/session_steps.sql``) are the products it viewed in
order, a product viewed several times in a row counted once. Four matrices
are counted from them, each a :class:`~engine.udfs.pairs.PairRows` with row
``a`` holding the products that followed ``a``:

* ``next``: how often ``b`` came directly after ``a`` (``transitions``);
* ``adjacent``: how often ``b`` came directly before or after ``a``
  (``transitions_both``);
* ``rules``: every ``b`` up to ``sr_window`` steps after ``a``, weighted by
  1/distance (``sequential_rules``, Ludewig and Jannach 2018), and
  ``rules_both``: the same before or after ``a`` (``sequential_rules_both``,
  what ``adjacent`` is to ``next``). The weights
  are kept as integers, ``sr_scale(window) // distance`` (``engine.config``:
  the least common multiple of 1..window), so sums are exact in any order and an
  incremental build still equals one from scratch; the score divides by
  the scale.

Each session adds its own terms, signed like the baskets of
``engine.udfs.pairs``, so a delta of changed sessions updates stored counts.
The readable definition is ``sql/ranked_steps.sql``; the tests compare both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numba
import numpy as np
import pyarrow as pa

from engine.config import MAX_SR_WINDOW, sr_scale
from engine.udfs.pairs import PairRows, add, compacted_in_place, transposed


@dataclass(frozen=True)
class Following:
    """How one matrix is counted from steps: how many steps ahead, both directions or not, weighted or not."""

    window: int
    both: bool
    weighted: bool

    @property
    def scale(self) -> int:
        """What a weighted count is divided by for the score (1 when not weighted)."""
        return sr_scale(self.window) if self.weighted else 1


def matrices(sr_window: int) -> dict[str, Following]:
    """The follow matrices and how each is counted (``sr_window``: the sequential rules' reach)."""
    return {
        "next": Following(1, both=False, weighted=False),
        "adjacent": Following(1, both=True, weighted=False),
        "rules": Following(sr_window, both=False, weighted=True),
        "rules_both": Following(sr_window, both=True, weighted=True),
    }


def count(
    steps: pa.ListArray, signs: np.ndarray, n_items: int, followings: Mapping[str, Following]
) -> dict[str, PairRows]:
    """Count what follows what in each session's steps (lists of item numbers), weighted by its sign (+1 or -1).

    One matrix per entry of ``followings`` (:func:`matrices`). The steps
    are gathered once, every term up to the widest window with its distance,
    and each matrix sums the terms of its own window. Only what follows is
    gathered: a matrix of both directions is its one-direction matrix plus
    that matrix's transpose (``b`` before ``a`` is ``a`` after ``b``), which
    costs a fraction of counting its terms again.

    Raises:
        ValueError: input the compiled loops cannot take (they have no bounds checks).
    """
    lists = steps.combine_chunks() if isinstance(steps, pa.ChunkedArray) else steps
    values = lists.flatten()
    if lists.null_count or values.null_count:
        msg = "steps must be lists of item numbers without nulls"
        raise ValueError(msg)
    items = values.to_numpy().astype(np.int32, copy=False)
    if items.size and not (items.min() >= 0 and items.max() < n_items):
        msg = f"steps must be lists of item numbers 0..{n_items - 1}"
        raise ValueError(msg)
    signs = np.asarray(signs, dtype=np.int32)
    if signs.size != len(lists):
        msg = f"{signs.size} signs for {len(lists)} sessions"
        raise ValueError(msg)
    if not np.isin(signs, (-1, 1)).all():  # the loops keep only a sign's direction
        msg = "each session's sign must be +1 or -1"
        raise ValueError(msg)
    for following in followings.values():
        if not 1 <= following.window <= MAX_SR_WINDOW:
            msg = f"a window of 1..{MAX_SR_WINDOW} steps, not {following.window}"
            raise ValueError(msg)
    if not followings:
        return {}
    ptr = lists.offsets.to_numpy().astype(np.int64)
    ptr = ptr - ptr[0]
    reach = max(following.window for following in followings.values())
    row_ptr, other, step = _by_row(ptr, items, signs, n_items, reach, numba.get_num_threads())
    ahead: dict[Following, PairRows] = {}
    counted = {}
    for name, following in followings.items():
        forward = replace(following, both=False)
        if forward not in ahead:
            ahead[forward] = _ahead(row_ptr, other, step, forward)
        counted[name] = add(ahead[forward], transposed(ahead[forward])) if following.both else ahead[forward]
    return counted


def _ahead(row_ptr: np.ndarray, other: np.ndarray, step: np.ndarray, following: Following) -> PairRows:
    """The one-direction matrix: row ``a`` sums the signed weights of the products up to ``window`` steps after it."""
    related = np.empty(other.size, np.int32)
    counts = np.empty(other.size, np.int32)
    length = _sum_rows(
        row_ptr, other, step, following.window, following.weighted, following.scale, related, counts,
        numba.get_num_threads(),
    )  # fmt: skip
    start, related, counts = compacted_in_place(row_ptr[:-1].copy(), length, related, counts)
    return PairRows(start, length, related, counts)


@numba.njit(cache=True, parallel=True)
def _by_row(ptr, items, signs, n_items, window, threads):
    """Every (a, b) term of the sessions, ``b`` up to ``window`` steps after ``a``, grouped by ``a``: row pointers,
    b, and the signed distance (the session's sign times how many steps ``b`` is after ``a``).

    A counting sort, sharded by ranges of sessions: each shard counts its
    terms per row, then writes them into its own slots of each row, so a
    row holds its terms in session order, whatever the number of threads.
    """
    n_sessions = ptr.size - 1
    n_shards = max(1, min(n_sessions, threads))
    bounds = np.empty(n_shards + 1, dtype=np.int64)
    for shard in range(n_shards + 1):
        bounds[shard] = n_sessions * shard // n_shards
    sizes = np.zeros((n_shards, n_items), dtype=np.int64)
    for shard in numba.prange(n_shards):
        for s in range(bounds[shard], bounds[shard + 1]):
            end = ptr[s + 1]
            for i in range(ptr[s], end):
                for j in range(i + 1, min(i + window + 1, end)):
                    if items[i] != items[j]:
                        sizes[shard, items[i]] += 1
    row_ptr = np.zeros(n_items + 1, dtype=np.int64)
    fill = np.empty((n_shards, n_items), dtype=np.int64)
    for a in range(n_items):
        at = row_ptr[a]
        for shard in range(n_shards):
            fill[shard, a] = at
            at += sizes[shard, a]
        row_ptr[a + 1] = at
    other = np.empty(row_ptr[-1], dtype=np.int32)
    step = np.empty(row_ptr[-1], dtype=np.int8)
    for shard in numba.prange(n_shards):
        for s in range(bounds[shard], bounds[shard + 1]):
            end = ptr[s + 1]
            for i in range(ptr[s], end):
                for j in range(i + 1, min(i + window + 1, end)):
                    a, b = items[i], items[j]
                    if a != b:
                        other[fill[shard, a]] = b
                        step[fill[shard, a]] = signs[s] * (j - i)
                        fill[shard, a] += 1
    return row_ptr, other, step


@numba.njit(cache=True, parallel=True)
def _sum_rows(row_ptr, other, step, window, weighted, scale, related, counts, threads):
    """Sum each row's terms up to ``window`` steps by product, each ``sign * (scale // distance if weighted else 1)``,
    in a dense accumulator, writing the nonzero sums at the row's start; return the rows' lengths."""
    n_items = row_ptr.size - 1
    length = np.zeros(n_items, dtype=np.int32)
    n_chunks = max(1, min(n_items, threads))
    for chunk in numba.prange(n_chunks):
        accumulated = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items, dtype=np.int32)
        for a in range(chunk, n_items, n_chunks):
            n_touched = 0
            for j in range(row_ptr[a], row_ptr[a + 1]):
                distance = abs(np.int32(step[j]))
                if distance > window:
                    continue
                b = other[j]
                if seen[b] != a:
                    seen[b] = a
                    touched[n_touched] = b
                    n_touched += 1
                weight = scale // distance if weighted else 1
                accumulated[b] += weight if step[j] > 0 else -weight
            out = row_ptr[a]
            for t in range(n_touched):
                b = touched[t]
                c = accumulated[b]
                accumulated[b] = 0
                if c != 0:
                    related[out] = b
                    counts[out] = c
                    out += 1
            length[a] = out - row_ptr[a]
    return length
