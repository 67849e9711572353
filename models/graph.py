"""A neighbour graph over the reduced vectors, walked from the Annoy forest's answer to finish its search.

Annoy's random-projection trees lead a query to the right region, but on
encoder features (few effective dimensions, clusters of very unequal size)
they miss a fifth of the true top 10 at the search_k one core can afford a
thousand times a second, and more trees or candidates buy little (docs/benchmarks.md,
"Measured: visual similarity", has the figures). What they return is close to the answer,
though, and the answer's members are each other's neighbours. So the index
also keeps each item's ``m`` nearest items (this module's graph) and a query
walks it, as HNSW walks its bottom layer: starting from the forest's results,
it repeatedly takes the closest item it has not expanded yet and measures that
item's neighbours, keeping the best ``pool`` found, until every item in the
pool has been expanded. The pool is then re-ranked exactly by the caller.

The graph is built from the forest (each item's Annoy neighbours) and then
improved by rounds of NN-descent (Dong et al., 2011): an item's neighbours'
neighbours, and the items that list it, are its likeliest true neighbours.
Both the build and the walk are compiled with Numba; the walk releases the
GIL, so the server's threads search in parallel as they do in Annoy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

FAST = {"reassoc", "contract", "nsz", "arcp"}
"""Numba's fast-math flags for the distance loops: reordering the sums lets them vectorise; NaN checks still hold."""

REVERSE = 16
"""At most this many of the items that list an item are also its candidates in a refinement round."""


def build(
    vectors: np.ndarray,
    first_guess: Callable[[int], list[int]],
    m: int = 32,
    rounds: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Each item's ``m`` nearest items (approximately), as an ``(items, m)`` int32 array, closest first.

    Args:
        vectors: the reduced vectors the forest was built over (Euclidean distance).
        first_guess: an item's neighbours by the forest (it may include the item
            itself, and may return fewer than ``m``); called from one thread per core.
        m: neighbours per item (at most the number of other items; -1 fills a row the search left short).
        rounds: NN-descent rounds after the forest's guess.
        progress: called with (done, total) work units: each item's first guess
            is one, and each round counts one per item (about 30 s in all at
            180,000 items on two cores).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    items = vectors.shape[0]
    m = min(m, items - 1)
    graph = np.full((items, max(m, 0)), -1, dtype=np.int32)
    if m <= 0:
        if progress is not None:
            progress(items * (1 + rounds), items * (1 + rounds))
        return graph
    total = items * (1 + rounds)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for item, guess in enumerate(pool.map(first_guess, range(items), chunksize=256)):
            guess = [other for other in guess if other != item][:m]
            graph[item, : len(guess)] = guess
            if progress is not None and (item + 1) % 10_000 == 0:
                progress(item + 1, total)
    for done in range(rounds):
        if progress is not None:
            progress(items * (1 + done), total)
        graph = _refine(graph, _reverse(graph, REVERSE), vectors)
    if progress is not None:
        progress(total, total)
    return graph


def _reverse(graph: np.ndarray, width: int) -> np.ndarray:
    """Per item, up to ``width`` items whose lists name it (-1 where fewer do)."""
    items, m = graph.shape
    source = np.repeat(np.arange(items, dtype=np.int32), m)
    target = graph.ravel()
    valid = target >= 0
    source, target = source[valid], target[valid]
    order = np.argsort(target, kind="stable")
    source, target = source[order], target[order]
    position = np.arange(target.size) - np.searchsorted(target, target)
    kept = position < width
    out = np.full((items, width), -1, dtype=np.int32)
    out[target[kept], position[kept]] = source[kept]
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _distance(vectors: np.ndarray, item: int, query: np.ndarray) -> np.float32:
    total = np.float32(0.0)
    for d in range(query.size):
        difference = vectors[item, d] - query[d]
        total += difference * difference
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _insert(ids, distances, flags, size, item, distance) -> int:
    """Put ``item`` into the sorted pool (by distance, then id) unless it is full and item is no better; new size."""
    capacity = ids.size
    if distance != distance:  # NaN: never closer than anything, and never in the pool
        return size
    if size == capacity and (
        distance > distances[size - 1] or (distance == distances[size - 1] and item > ids[size - 1])
    ):
        return size
    place = size if size < capacity else capacity - 1
    while place > 0 and (
        distances[place - 1] > distance or (distances[place - 1] == distance and ids[place - 1] > item)
    ):
        ids[place] = ids[place - 1]
        distances[place] = distances[place - 1]
        flags[place] = flags[place - 1]
        place -= 1
    ids[place] = item
    distances[place] = distance
    flags[place] = False
    return size + 1 if size < capacity else size


@numba.njit(cache=True, parallel=True, fastmath=FAST)
def _refine(graph: np.ndarray, reverse: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One NN-descent round: each item's best ``m`` among its neighbours, their neighbours and the items naming it."""
    items, m = graph.shape
    out = np.empty_like(graph)
    chunks = max(1, min(items, 256))
    for chunk in numba.prange(chunks):
        seen = np.full(items, -1, dtype=np.int32)  # seen[x] == item: x is already a candidate of item
        ids = np.empty(m, dtype=np.int32)
        distances = np.empty(m, dtype=np.float32)
        flags = np.zeros(m, dtype=np.bool_)
        for item in range(chunk, items, chunks):
            seen[item] = item
            size = 0
            query = vectors[item]
            for position in range(m + reverse.shape[1]):
                first = graph[item, position] if position < m else reverse[item, position - m]
                if first < 0:
                    continue
                if seen[first] != item:
                    seen[first] = item
                    size = _insert(ids, distances, flags, size, first, _distance(vectors, first, query))
                for second in graph[first]:
                    if second >= 0 and seen[second] != item:
                        seen[second] = item
                        size = _insert(ids, distances, flags, size, second, _distance(vectors, second, query))
            out[item, :size] = ids[:size]
            out[item, size:] = -1
    return out


@numba.njit(cache=True, nogil=True, fastmath=FAST)
def search(
    query: np.ndarray, seeds: np.ndarray, graph: np.ndarray, vectors: np.ndarray, pool: int, exclude: int
) -> np.ndarray:
    """The ``pool`` items nearest to ``query`` found by walking ``graph`` from ``seeds``, closest first.

    ``exclude`` (an item number, or -1) is never returned: the product a
    "more like this" query starts from.
    """
    items = vectors.shape[0]
    seen = np.zeros(items, dtype=np.bool_)
    ids = np.empty(pool, dtype=np.int32)
    distances = np.empty(pool, dtype=np.float32)
    expanded = np.zeros(pool, dtype=np.bool_)
    if exclude >= 0:
        seen[exclude] = True
    size = 0
    for seed in seeds:
        if not seen[seed]:
            seen[seed] = True
            size = _insert(ids, distances, expanded, size, seed, _distance(vectors, seed, query))
    while True:
        next_one = 0
        while next_one < size and expanded[next_one]:
            next_one += 1
        if next_one == size:
            break
        expanded[next_one] = True
        for neighbour in graph[ids[next_one]]:
            if neighbour >= 0 and not seen[neighbour]:
                seen[neighbour] = True
                size = _insert(ids, distances, expanded, size, neighbour, _distance(vectors, neighbour, query))
    return ids[:size].copy()
