"""``sql/visit_lists.sql`` compiled: each test step's list for the visit so far, as the session route blends it.

At every step of a test session the products viewed so far (the most recent
first, its age 1, the one before 2, ...) each bring their list of the served
algorithm; an item gains 1 / (age x rank) from each list it is on, the
visit's own products are left out, and the best ``top_n`` are the step's list
(``server.session_routes``). A visit whose lists are all empty gets the
tenant's most-viewed products. Scores are compared as
:func:`engine.visit_order.blend_key` gives them, ties going to the lower
product: the same order in the server, this kernel and the SQL.

Sessions are dealt to the cores; each step sorts its few candidates.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from engine.visit_order import KEY_SCALE


def visit_lists(
    related: np.ndarray,
    order: np.ndarray,
    item: np.ndarray,
    next_item: np.ndarray,
    starts: np.ndarray,
    block: np.ndarray,
    leaders: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each step's rank of ``next_item`` in the visit's list (0: not in it), and the list itself.

    Args:
        related: int32 (item, rank): each item's list of the served algorithm, -1 past its end.
        order: each item's place in (tenant, product_id) order, which breaks ties.
        item, next_item: the step's product and the next one (-1: unknown to training), in session order.
        starts: where each session's steps begin in ``item``, then their end.
        block: each step's tenant, as a row of ``leaders``.
        leaders: int32 (tenant, top_n + 1): the tenant's most-viewed items, best first, -1 past the end.

    Returns:
        int32 ranks, one per step, and int32 (step, top_n) lists, -1 past each one's end.
    """
    return _visit_lists(related, order, item, next_item, starts, block, leaders)


@numba.njit(cache=True, parallel=True)
def _visit_lists(related, order, item, next_item, starts, block, leaders):
    top_n = related.shape[1]
    steps = item.size
    ranks = np.zeros(steps, np.int32)
    shown = np.full((steps, top_n), -1, np.int32)
    for session in numba.prange(starts.size - 1):
        first, end = starts[session], starts[session + 1]
        for t in range(first, end):
            viewed = np.sort(item[first : t + 1])
            # Every (candidate, share) the visit's lists give, the most recent product first, each list in rank order.
            candidate = np.empty((t + 1 - first) * top_n, np.int64)
            share = np.empty(candidate.size, np.float64)
            n = 0
            for j in range(t, first - 1, -1):
                product = item[j]
                if product < 0:
                    continue
                age = t - j + 1
                for slot in range(top_n):
                    c = related[product, slot]
                    if c < 0:
                        break
                    at = np.searchsorted(viewed, c)
                    if at < viewed.size and viewed[at] == c:
                        continue
                    candidate[n] = c
                    share[n] = 1.0 / (age * (slot + 1))
                    n += 1
            if n == 0:
                _fallback(leaders[block[t]], viewed, next_item[t], top_n, ranks, shown, t)
                continue
            by_item = np.argsort(candidate[:n], kind="mergesort")  # stable: each item's shares in the order added
            unique = np.empty(n, np.int64)
            key = np.empty(n, np.int64)
            m = -1
            total = 0.0
            for k in range(n):
                c = candidate[by_item[k]]
                if m < 0 or unique[m] != c:
                    if m >= 0:
                        key[m] = math.floor(total * KEY_SCALE + 0.5)
                    m += 1
                    unique[m] = c
                    total = 0.0
                total += share[by_item[k]]
            key[m] = math.floor(total * KEY_SCALE + 0.5)
            m += 1
            by_order = np.argsort(order[unique[:m]], kind="mergesort")
            best = by_order[np.argsort(-key[:m][by_order], kind="mergesort")]
            for r in range(min(top_n, m)):
                chosen = unique[best[r]]
                shown[t, r] = chosen
                if chosen == next_item[t]:
                    ranks[t] = r + 1
    return ranks, shown


@numba.njit(cache=True, inline="always")
def _fallback(leaders, viewed, next_item, top_n, ranks, shown, t):
    """The tenant's most-viewed items, the visit's own left out: the list of a visit without any."""
    r = 0
    for slot in range(leaders.size):
        leader = leaders[slot]
        if leader < 0 or r == top_n:
            break
        at = np.searchsorted(viewed, leader)
        if at < viewed.size and viewed[at] == leader:
            continue
        shown[t, r] = leader
        r += 1
        if leader == next_item:
            ranks[t] = r
