"""``sql/visit_lists.sql`` compiled: each test step's list for the visit so far, as the session route blends it.

At every step of a test session the products viewed so far (the most recent
first, its age 1, the one before 2, ...) each bring their list of the served
algorithm; an item gains 1 / (age x rank) from each list it is on, the
visit's own products are left out, and the best ``top_n`` are the step's list
(``server.session_routes``). A visit whose lists are all empty gets the
tenant's most-viewed products. Scores are compared as
:func:`engine.visit_order.blend_key` gives them, ties going to the lower
product: the same order in the server, this kernel and the SQL.

Sessions are dealt to the cores; each core adds scores up in a dense array
over the items and keeps the best ``top_n`` of a step in a small sorted buffer.
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
    return _visit_lists(related, order, item, next_item, starts, block, leaders, numba.get_num_threads())


@numba.njit(cache=True, parallel=True)
def _visit_lists(related, order, item, next_item, starts, block, leaders, threads):
    n_items, top_n = related.shape
    sessions = starts.size - 1
    ranks = np.zeros(item.size, np.int32)
    shown = np.full((item.size, top_n), -1, np.int32)
    shares = max(1, min(sessions, threads))
    for share in numba.prange(shares):
        # Dense per share: each candidate's score so far, and the session that last viewed each item.
        score = np.zeros(n_items, np.float64)
        seen = np.full(n_items, -1, np.int64)
        touched = np.empty(n_items, np.int64)
        best = np.empty(top_n, np.int64)
        best_key = np.empty(top_n, np.int64)
        for session in range(share, sessions, shares):
            first, end = starts[session], starts[session + 1]
            for t in range(first, end):
                if item[t] >= 0:
                    seen[item[t]] = session
                # The most recent product first, each list in rank order: the server's order of addition.
                m = 0
                for j in range(t, first - 1, -1):
                    product = item[j]
                    if product < 0:
                        continue
                    for slot in range(top_n):
                        c = related[product, slot]
                        if c < 0:
                            break
                        if seen[c] == session:
                            continue
                        if score[c] == 0.0:
                            touched[m] = c
                            m += 1
                        score[c] += 1.0 / ((t - j + 1) * (slot + 1))
                if m == 0:
                    _fallback(leaders[block[t]], seen, session, next_item[t], top_n, ranks, shown, t)
                    continue
                filled = 0
                for k in range(m):
                    c = touched[k]
                    key = math.floor(score[c] * KEY_SCALE + 0.5)
                    score[c] = 0.0
                    if filled == top_n and not _ahead(key, c, best_key[top_n - 1], best[top_n - 1], order):
                        continue
                    at = filled if filled < top_n else top_n - 1
                    while at > 0 and _ahead(key, c, best_key[at - 1], best[at - 1], order):
                        best[at], best_key[at] = best[at - 1], best_key[at - 1]
                        at -= 1
                    best[at], best_key[at] = c, key
                    filled = min(filled + 1, top_n)
                for r in range(filled):
                    shown[t, r] = best[r]
                    if best[r] == next_item[t]:
                        ranks[t] = r + 1
    return ranks, shown


@numba.njit(cache=True, inline="always")
def _ahead(key_a, item_a, key_b, item_b, order):
    """Does (key_a, item_a) come before (key_b, item_b)? The higher key first, then the lower product."""
    return key_a > key_b or (key_a == key_b and order[item_a] < order[item_b])


@numba.njit(cache=True, inline="always")
def _fallback(leaders, seen, session, next_item, top_n, ranks, shown, t):
    """The tenant's most-viewed items, the visit's own left out: the list of a visit without any."""
    r = 0
    for slot in range(leaders.size):
        leader = leaders[slot]
        if leader < 0 or r == top_n:
            break
        if seen[leader] == session:
            continue
        shown[t, r] = leader
        r += 1
        if leader == next_item:
            ranks[t] = r
