"""The click-based lists: ``sql/ranked_pairs.sql``, ``ranked_steps.sql``, ``popular.sql`` and ``itemitem.sql`` compiled.

From the pair counts (``engine.udfs.pairs``: the stored counts plus up to two
signed deltas), each product's row is read once, its candidates scored with
the three co-occurrence measures, and the best ``top_n`` of each kept in a
small sorted buffer; products are dealt to the cores in turn. The
sequence-aware lists are ranked alike from the follow counts
(``engine.udfs.sequences``), ``sequence_blend`` from the ``rules_both`` and
pair counts together. ``popular`` comes from the
item counts alone. The result is exactly the rows of ``itemitem.sql`` (same
counts, same scores from the same compiled :func:`~engine.udfs.llr.llr`, the
same tie-break by product id) and already in the table's ``(tenant,
algorithm, product_id, rank)`` order. The tests compare both paths.

Items are numbered once and for all (new products get the next numbers), so
the stored counts never need renumbering; ``order`` gives each live item its
place in (tenant, product_id) order, which is how ties are broken and how
rows come out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.config import CLICK_ALGORITHMS, sr_scale
from engine.udfs import sequences
from engine.udfs.llr import from_entropies, x_log_x_table
from engine.udfs.pairs import PairRows, accumulate

ALGORITHMS = CLICK_ALGORITHMS
"""The algorithms in row order, which is also their name order; the list arrays' first axis holds all but popular."""
POPULAR = ALGORITHMS.index("popular")
FOLLOWING = {
    "sequential_rules": "rules",
    "sequential_rules_both": "rules_both",
    "transitions": "next",
    "transitions_both": "adjacent",
}
"""The sequence-aware algorithms and the follow matrix (``engine.udfs.sequences``) each ranks by."""
BLEND = "sequence_blend"
"""``sequential_rules_both`` plus co-occurrence, each shared session weighing as a view one step beyond the window."""
READS: dict[str, tuple[str, ...]] = {
    "cooccurrence": ("pairs",),
    "jaccard": ("pairs",),
    "llr": ("pairs",),
    "popular": (),
    BLEND: ("pairs", FOLLOWING["sequential_rules_both"]),
    **{algorithm: (matrix,) for algorithm, matrix in FOLLOWING.items()},
}
"""The matrices (``engine.pipeline.counts.MATRICES``) each algorithm is ranked by; popular needs only item counts."""
COUNTED = np.array(
    [name in ("cooccurrence", "jaccard", "llr", "transitions", "transitions_both") for name in ALGORITHMS]
)
"""Which algorithms have a count as evidence (the ``cooccurrence`` column); the others' is NULL."""


def list_index(number: int) -> int:
    """Where algorithm ``number`` of :data:`ALGORITHMS` is on the list arrays' first axis (popular has none)."""
    return number - (number > POPULAR)


@dataclass(frozen=True)
class Items:
    """Every item (numbered product of a tenant) and its counts, by item number.

    ``sessions`` is how many sessions viewed the item (0: it is not in
    ``item_counts`` now and gets no list); ``tenant_sessions`` the sessions of
    its tenant, the N of the LLR's table.
    """

    tenant: pa.Array  # string
    product_id: pa.Array  # string
    sessions: np.ndarray  # int64
    tenant_sessions: np.ndarray  # int64

    def __len__(self) -> int:
        return self.sessions.size

    def ordered(self) -> np.ndarray:
        """The live items (``sessions > 0``) in (tenant, product_id) order: ``itemitem``'s row order."""
        live = np.flatnonzero(self.sessions > 0)
        table = pa.table({"tenant": self.tenant.take(live), "product_id": self.product_id.take(live)})
        by_key = pc.sort_indices(table, sort_keys=[("tenant", "ascending"), ("product_id", "ascending")])
        return live[by_key.to_numpy()]


ROW_LOCAL = slice(POPULAR, None)
"""The list arrays' algorithms whose list of a product depends on its row of counts alone (the sequence-aware ones
and the blend): a list is the same while its row is. cooccurrence's, jaccard's and llr's read the related products'
and the tenant's sessions too."""
ROW_LOCAL_ALGORITHMS = ALGORITHMS[POPULAR + 1 :]
"""The algorithms of :data:`ROW_LOCAL`, in order."""


@dataclass(frozen=True)
class Ranked:
    """The :data:`ROW_LOCAL` algorithms' lists as ranked from some counts: a later ranking of counts that differ from
    those in some rows only ranks those rows again and takes the rest from here.

    Either every item's lists (``rows`` None), or those of the items ``rows``
    over an earlier ranking (``under``) that holds the others'.
    """

    related: np.ndarray  # int32 (algorithm, item, rank)
    length: np.ndarray  # int32 (algorithm, item)
    cooccurrence: np.ndarray | None  # as in Lists
    score: np.ndarray | None
    rows: np.ndarray | None = None  # int64: the items whose lists these are; None: every item's, by number
    under: Ranked | None = None

    @property
    def items(self) -> int:
        """How many items (numbered from 0) the lists cover."""
        own = int(self.rows.max()) + 1 if self.rows is not None and self.rows.size else 0
        return max(own, self.under.items if self.under else self.length.shape[1] if self.rows is None else 0)

    def copy_into(self, arrays: list[np.ndarray], evidence: bool) -> None:
        """Write the lists into ``arrays`` (related, length, and with ``evidence`` cooccurrence and score: the
        :data:`ROW_LOCAL` part of each), the earlier ranking first."""
        if self.under is not None:
            self.under.copy_into(arrays, evidence)
        own = [self.related, self.length, *((self.cooccurrence, self.score) if evidence else ())]
        for whole, values in zip(arrays, own, strict=True):
            assert values is not None, "the ranked lists hold the evidence asked for"
            if self.rows is None:
                whole[:, : values.shape[1]] = values
            else:
                whole[:, self.rows] = values


@dataclass(frozen=True)
class Lists:
    """Every algorithm's top lists per item (first axis: :data:`ALGORITHMS` but popular), and ``popular``'s leaders per tenant."""

    related: np.ndarray  # int32 (algorithm, item, rank)
    cooccurrence: np.ndarray | None  # int32 (algorithm, item, rank); None: ranked without keeping them
    score: np.ndarray | None  # float64 (algorithm, item, rank); None: ranked without keeping them
    length: np.ndarray  # int32 (algorithm, item)
    by_order: np.ndarray  # int64: live items in (tenant, product_id) order
    tenants: list[tuple[int, int]]  # (first, end) positions in by_order of each tenant, in tenant order
    leaders: np.ndarray  # int32 (tenant, top_n + 1): most-viewed items, -1 where a tenant has fewer

    def row_local(self) -> Ranked:
        """The :data:`ROW_LOCAL` algorithms' lists (views of these arrays), for a later ranking to start from."""
        return Ranked(
            self.related[ROW_LOCAL],
            self.length[ROW_LOCAL],
            None if self.cooccurrence is None else self.cooccurrence[ROW_LOCAL],
            None if self.score is None else self.score[ROW_LOCAL],
        )


def top_lists(
    items: Items,
    counts: Mapping[str, tuple[PairRows, ...]],
    *,
    top_n: int,
    min_support: int,
    sr_window: int,
    compute: Collection[str] = ALGORITHMS,
    threads: int | None = None,
    evidence: bool = True,
    ranked: tuple[Ranked, np.ndarray] | None = None,
) -> Lists:
    """Each live item's top ``top_n`` related items by every algorithm but popular, and the popular leaders.

    An algorithm not in ``compute`` gets no lists (and popular no leaders);
    only the counts that those in ``compute`` read (:data:`READS`) are needed.

    Args:
        items: the item table with its current counts.
        counts: by matrix name (``engine.pipeline.counts.MATRICES``), the stored counts and up to two signed
            deltas; summed, they are the counts to rank by.
        top_n: list length per product.
        min_support: the fewest sessions a pair must share (for the co-occurrence algorithms).
        sr_window: the sequential rules' reach, whose scale their weighted counts are divided by.
        threads: how many shares to split the items into (default: Numba's threads).
        evidence: whether to keep each entry's count and score (``itemitem``'s rows need them; the
            evaluation reads only the related items): without, they are ranked in each thread's own rows,
            and the memory of two of the three list arrays is never touched.
        ranked: the :data:`ROW_LOCAL` lists as ranked from counts that differ from ``counts`` in the rows
            the bool array beside them marks (per item; items numbered since count as changed): only those
            rows are ranked again (the lists must hold the evidence that ``evidence`` asks for).
    """
    n = len(items)
    threads = threads or numba.get_num_threads()
    by_order = items.ordered()
    order = np.full(n, -1, dtype=np.int32)
    order[by_order] = np.arange(by_order.size, dtype=np.int32)
    # Zeroed arrays whose pages are touched only where an algorithm is computed: the others stay empty lists.
    shape = (len(ALGORITHMS) - 1, n, top_n)
    related, length = np.zeros(shape, np.int32), np.zeros(shape[:2], np.int32)
    kept = shape if evidence else (shape[0], max(1, threads), top_n)  # without: a row per thread, reused
    cooccurrence, score = np.zeros(kept, np.int32), np.zeros(kept, np.float64)
    rows = np.arange(n, dtype=np.int64)  # the rows the row-local kernels rank
    if ranked is not None:
        earlier, changed = ranked
        outputs = [related, length, *((cooccurrence, score) if evidence else ())]
        earlier.copy_into([whole[ROW_LOCAL] for whole in outputs], evidence)
        before = earlier.items
        rows = np.flatnonzero(np.r_[changed[:before], np.ones(n - before, bool)])

    def into(first: int, count: int = 1) -> list[np.ndarray]:
        """The kernels' output arguments: algorithms ``first`` to ``first + count`` of the list arrays."""
        return [whole[first : first + count] for whole in (related, cooccurrence, score, length)]

    if set(ALGORITHMS[:POPULAR]) & set(compute):  # cooccurrence, jaccard and llr: one kernel ranks all three
        # Each kernel's arguments in one list: mypy rejects a positional argument after a starred list.
        arguments = [
            *_arrays(counts["pairs"], n),
            items.sessions,
            items.tenant_sessions,
            order,
            min_support,
            top_n,
            threads,
            not evidence,
            *into(0, POPULAR),
        ]
        _top_related(*arguments)
    scales = {name: following.scale for name, following in sequences.matrices(sr_window).items()}
    blend_scale = sr_scale(sr_window + 1)
    for number, algorithm in enumerate(ALGORITHMS[POPULAR + 1 :], start=POPULAR + 1):
        if algorithm not in compute:
            continue
        if algorithm == BLEND:
            follows, shared = _arrays(counts[FOLLOWING["sequential_rules_both"]], n), _arrays(counts["pairs"], n)
            follow_weight, pair_weight = blend_scale // scales["rules_both"], blend_scale // (sr_window + 1)
            weights = (min_support, follow_weight, pair_weight, blend_scale, top_n, threads, not evidence)
            arguments = [*follows, *shared, items.sessions, order, rows, *weights, *into(list_index(number))]
            _top_blended(*arguments)
        else:
            matrix = FOLLOWING[algorithm]
            arguments = [
                *_arrays(counts[matrix], n),
                items.sessions,
                order,
                rows,
                scales[matrix],
                top_n,
                threads,
                not evidence,
            ]
            _top_followers(*arguments, *into(list_index(number)))
    for number, algorithm in enumerate(ALGORITHMS[:POPULAR]):
        if algorithm not in compute:
            length[number] = 0  # computed with the others that share its counts, not wanted
    tenants = _tenant_blocks(items.tenant.take(by_order))
    leaders = _leaders(tenants, by_order, items.sessions, top_n)
    if "popular" not in compute:
        leaders[:] = -1
    if not evidence:
        return Lists(related, None, None, length, by_order, tenants, leaders)
    return Lists(related, cooccurrence, score, length, by_order, tenants, leaders)


def _arrays(rows: tuple[PairRows, ...], n_items: int) -> list[np.ndarray]:
    """The arrays of one matrix's stored counts and deltas, three sets of them (empty ones added), over every item."""
    if len(rows) > 3:
        msg = "at most the stored counts and two deltas"
        raise ValueError(msg)
    padded = [p.padded(n_items) for p in rows] + [PairRows.empty(n_items)] * (3 - len(rows))
    return [array for p in padded for array in (p.start, p.length, p.related, p.count)]


def _tenant_blocks(tenant: pa.Array) -> list[tuple[int, int]]:
    """(first, end) positions of each tenant in the ordered items."""
    names = tenant.to_numpy(zero_copy_only=False)
    if not names.size:
        return []
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1], True])
    return list(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True))


def _leaders(tenants: list[tuple[int, int]], by_order: np.ndarray, sessions: np.ndarray, top_n: int) -> np.ndarray:
    """Each tenant's ``top_n + 1`` most-viewed items (ties: lower product first), -1 where it has fewer.

    ``sql/popular.sql`` gives each product the first ``top_n`` of them after
    leaving itself out; :func:`_flatten` writes those rows from this table.
    """
    leaders = np.full((len(tenants), top_n + 1), -1, dtype=np.int32)
    for t, (first, end) in enumerate(tenants):
        members = by_order[first:end]
        best = members[np.lexsort((np.arange(end - first), -sessions[members]))[: top_n + 1]]
        leaders[t, : best.size] = best
    return leaders


@numba.njit(cache=True, inline="always")
def _ahead(score_a: float, item_a: int, score_b: float, item_b: int, order: np.ndarray) -> bool:
    """Does (score_a, item_a) rank before (score_b, item_b)? Higher score first, then lower product."""
    return score_a > score_b or (score_a == score_b and order[item_a] < order[item_b])


@numba.njit(cache=True, inline="always")
def _offer(related, cooccurrence, score, kept, algorithm, item, row, candidate, count, value, order):
    """Insert a candidate into one product's sorted top list if it makes the cut; return the new length.

    The list is ``related[algorithm, item]``; its counts and scores are
    ``cooccurrence`` and ``score`` at ``[algorithm, row]`` (``row`` is the
    item, or the thread's own row when they are not kept).
    """
    top_n = related.shape[2]
    last = kept - 1
    if kept == top_n and not _ahead(
        value, candidate, score[algorithm, row, last], related[algorithm, item, last], order
    ):
        return kept
    slot = kept if kept < top_n else top_n - 1
    while slot > 0 and _ahead(
        value, candidate, score[algorithm, row, slot - 1], related[algorithm, item, slot - 1], order
    ):
        related[algorithm, item, slot] = related[algorithm, item, slot - 1]
        cooccurrence[algorithm, row, slot] = cooccurrence[algorithm, row, slot - 1]
        score[algorithm, row, slot] = score[algorithm, row, slot - 1]
        slot -= 1
    related[algorithm, item, slot] = candidate
    cooccurrence[algorithm, row, slot] = count
    score[algorithm, row, slot] = value
    return min(kept + 1, top_n)


@numba.njit(cache=True, parallel=True)
def _top_related(
    start0, length0, related0, count0,
    start1, length1, related1, count1,
    start2, length2, related2, count2,
    sessions, tenant_sessions, order, min_support, top_n, threads, own_rows,
    related, cooccurrence, score, length,
):  # fmt: skip
    """cooccurrence's, jaccard's and llr's lists, written into the last four arrays (``length`` zeroed; entries
    past a list's length are never read). ``own_rows``: the counts and scores go to row ``chunk`` of theirs
    (see :func:`_offer`)."""
    n_items = sessions.size
    # Every count in the LLR's 2x2 tables is at most the tenant's sessions, so its
    # xLogX terms are looked up, and each product's margin entropy is computed once.
    xlx = x_log_x_table(tenant_sessions.max() if n_items else 0)
    margin = np.zeros(n_items, dtype=np.float64)
    for i in range(n_items):
        if sessions[i] > 0:
            margin[i] = xlx[tenant_sessions[i]] - xlx[sessions[i]] - xlx[tenant_sessions[i] - sessions[i]]
    n_chunks = max(1, min(n_items, threads))
    for chunk in numba.prange(n_chunks):
        # For rows that a delta changes: the counts summed in a dense accumulator, as in pairs._count_rows.
        accumulated = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)
        shared = np.empty(n_items + 1, dtype=np.int32)
        for a in range(chunk, n_items, n_chunks):  # every n_chunks-th product: the threads get even shares
            na = sessions[a]
            if na == 0:
                continue
            n_candidates = 0
            if length1[a] == 0 and length2[a] == 0:  # the stored counts as they are
                for j in range(start0[a], start0[a] + length0[a]):
                    b = related0[j]
                    k11 = count0[j]
                    touched[n_candidates] = b
                    shared[n_candidates] = k11
                    n_candidates += k11 >= min_support
            else:
                n_touched = accumulate(start0, length0, related0, count0, a, 0, accumulated, seen, touched)
                n_touched = accumulate(start1, length1, related1, count1, a, n_touched, accumulated, seen, touched)
                n_touched = accumulate(start2, length2, related2, count2, a, n_touched, accumulated, seen, touched)
                for t in range(n_touched):
                    b = touched[t]
                    k11 = accumulated[b]
                    accumulated[b] = 0
                    touched[n_candidates] = b
                    shared[n_candidates] = k11
                    n_candidates += k11 >= min_support
            kept = 0
            n = tenant_sessions[a]
            row = np.int64(chunk) if own_rows else np.int64(a)
            for t in range(n_candidates):
                b = touched[t]
                k11 = shared[t]
                nb = sessions[b]
                # llr(k11, k12, k21, k22) with k12 = nb - k11, k21 = na - k11, k22 = n - na - nb + k11.
                matrix = xlx[n] - xlx[k11] - xlx[nb - k11] - xlx[na - k11] - xlx[n - na - nb + k11]
                _offer(related, cooccurrence, score, kept, 0, a, row, b, k11, float(k11), order)
                _offer(related, cooccurrence, score, kept, 1, a, row, b, k11, k11 / float(na + nb - k11), order)
                llr = from_entropies(margin[b], margin[a], matrix)
                kept = _offer(related, cooccurrence, score, kept, 2, a, row, b, k11, llr, order)
            length[:, a] = kept


@numba.njit(cache=True, parallel=True)
def _top_followers(
    start0, length0, related0, count0,
    start1, length1, related1, count1,
    start2, length2, related2, count2,
    sessions, order, rows, scale, top_n, threads, own_rows,
    related, counted, score, length,
):  # fmt: skip
    """One follow matrix's lists: the ``top_n`` products of each live item of ``rows`` by summed count / ``scale``
    (``sql/ranked_steps.sql``), written into the last four arrays as :func:`_top_related` does."""
    n_items = sessions.size
    n_chunks = max(1, min(rows.size, threads))
    for chunk in numba.prange(n_chunks):
        accumulated = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)
        for k in range(chunk, rows.size, n_chunks):
            a = rows[k]
            length[0, a] = 0
            if sessions[a] == 0:
                continue
            kept = 0
            row = np.int64(chunk) if own_rows else np.int64(a)
            if length1[a] == 0 and length2[a] == 0:  # the stored counts as they are
                for j in range(start0[a], start0[a] + length0[a]):
                    c = count0[j]
                    if c > 0:
                        kept = _offer(related, counted, score, kept, 0, a, row, related0[j], c, c / float(scale), order)
            else:
                n_touched = accumulate(start0, length0, related0, count0, a, 0, accumulated, seen, touched)
                n_touched = accumulate(start1, length1, related1, count1, a, n_touched, accumulated, seen, touched)
                n_touched = accumulate(start2, length2, related2, count2, a, n_touched, accumulated, seen, touched)
                for t in range(n_touched):
                    b = touched[t]
                    c = accumulated[b]
                    accumulated[b] = 0
                    if c > 0:
                        kept = _offer(related, counted, score, kept, 0, a, row, b, c, c / float(scale), order)
            length[0, a] = kept


@numba.njit(cache=True, parallel=True)
def _top_blended(
    start0, length0, related0, count0,
    start1, length1, related1, count1,
    start2, length2, related2, count2,
    pair_start0, pair_length0, pair_related0, pair_count0,
    pair_start1, pair_length1, pair_related1, pair_count1,
    pair_start2, pair_length2, pair_related2, pair_count2,
    sessions, order, rows, min_support, follow_weight, pair_weight, scale, top_n, threads, own_rows,
    related, counted, score, length,
):  # fmt: skip
    """``sequence_blend``'s lists: the ``rules_both`` counts times ``follow_weight`` plus, for pairs that share at
    least ``min_support`` sessions, the sessions times ``pair_weight``, all over ``scale`` (``sql/ranked_steps.sql``),
    written into the last four arrays as :func:`_top_related` does (``counted`` zeroed: it has no count), for the
    items of ``rows``.
    """
    n_items = sessions.size
    n_chunks = max(1, min(rows.size, threads))
    for chunk in numba.prange(n_chunks):
        followed = np.zeros(n_items, dtype=np.int32)
        shared = np.zeros(n_items, dtype=np.int32)
        seen = np.full(n_items, -1, dtype=np.int32)
        seen_pairs = np.full(n_items, -1, dtype=np.int32)
        touched = np.empty(n_items + 1, dtype=np.int32)
        touched_pairs = np.empty(n_items + 1, dtype=np.int32)
        for k in range(chunk, rows.size, n_chunks):
            a = rows[k]
            length[0, a] = 0
            if sessions[a] == 0:
                continue
            n_touched = accumulate(start0, length0, related0, count0, a, 0, followed, seen, touched)
            n_touched = accumulate(start1, length1, related1, count1, a, n_touched, followed, seen, touched)
            n_touched = accumulate(start2, length2, related2, count2, a, n_touched, followed, seen, touched)
            n_pairs = accumulate(
                pair_start0, pair_length0, pair_related0, pair_count0, a, 0, shared, seen_pairs, touched_pairs
            )
            n_pairs = accumulate(
                pair_start1, pair_length1, pair_related1, pair_count1, a, n_pairs, shared, seen_pairs, touched_pairs
            )
            n_pairs = accumulate(
                pair_start2, pair_length2, pair_related2, pair_count2, a, n_pairs, shared, seen_pairs, touched_pairs
            )
            kept = 0
            row = np.int64(chunk) if own_rows else np.int64(a)
            # Products that followed (and perhaps shared sessions), then those that only shared sessions:
            # each product's shared count is taken (set to 0) when it is scored, so none is offered twice.
            for t in range(n_touched + n_pairs):
                b = touched[t] if t < n_touched else touched_pairs[t - n_touched]
                f = followed[b] if t < n_touched else 0
                p = shared[b]
                followed[b] = 0
                shared[b] = 0
                value = np.int64(f) * follow_weight + (np.int64(p) * pair_weight if p >= min_support else 0)
                if value > 0:
                    kept = _offer(related, counted, score, kept, 0, a, row, b, 0, value / float(scale), order)
            length[0, a] = kept


def rows_table(items: Items, lists: Lists) -> pa.Table:
    """The lists as ``itemitem`` rows (columns and types of ``sql/itemitem.sql``), in its order.

    Every column that repeats a product's attribute is an Arrow dictionary
    indexed by the item number: the text columns over the item table's
    strings, ``product_sessions`` and ``related_sessions`` over its session
    counts. So nothing is copied per row here but the numbers that differ per
    row, which :func:`_flatten` writes in one pass.
    """
    assert lists.cooccurrence is not None and lists.score is not None, "rows come from lists ranked with evidence"
    first = np.array([f for f, _ in lists.tenants], dtype=np.int64)
    end = np.array([e for _, e in lists.tenants], dtype=np.int64)
    tenant, algorithm, item, rank, other, count, counted, value = _flatten(
        first, end, lists.by_order, lists.length, lists.related, lists.cooccurrence, lists.score, lists.leaders,
        items.sessions, COUNTED,
    )  # fmt: skip
    names = items.tenant.take(lists.by_order[first]) if first.size else pa.array([], pa.string())
    product_ids = items.product_id
    sessions = pa.array(items.sessions, pa.int64())
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
                pa.int64(), count.size, [pa.py_buffer(counted), pa.py_buffer(count)]
            ),  # NULL for popular and sequential_rules
            "product_sessions": pa.DictionaryArray.from_arrays(item, sessions, safe=False),
            "related_sessions": pa.DictionaryArray.from_arrays(other, sessions, safe=False),
        }
    )
    # Many small batches let readers (DuckDB, the Parquet writer) work on every core.
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), schema=table.schema)


@numba.njit(cache=True, parallel=True)
def _flatten(first, end, by_order, length, related, cooccurrence, score, leaders, sessions, has_count):
    """Gather the kept list entries, tenant by tenant, algorithm by algorithm, product by product.

    The other algorithms' entries come from the list arrays;
    ``popular``'s are the tenant's leaders with the product itself left out
    (or, for a product that is not among them, the last leader left out).
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
        if a == POPULAR:
            size = popular[t] * (end[t] - first[t])
        else:
            size = 0
            for p in range(first[t], end[t]):
                size += length[a - (a > POPULAR), by_order[p]]
        starts[block + 1] = starts[block] + size
    total = starts[blocks]
    tenant = np.empty(total, dtype=np.int32)
    algorithm = np.empty(total, dtype=np.int8)
    item = np.empty(total, dtype=np.int32)
    rank = np.empty(total, dtype=np.int32)
    other = np.empty(total, dtype=np.int32)
    count = np.zeros(total, dtype=np.int64)
    value = np.empty(total, dtype=np.float64)
    # The validity bitmap of `count` (Arrow's order: least significant bit first): set for the rows
    # of the algorithms with a count. Blocks are ranges of rows, so it is set range by range.
    counted = np.zeros((total + 7) // 8, dtype=np.uint8)
    for block in range(blocks):
        if has_count[block % n_algorithms]:
            for row in range(starts[block], starts[block + 1]):
                counted[row >> 3] |= np.uint8(1 << (row & 7))
    for block in numba.prange(blocks):
        t, a = block // n_algorithms, block % n_algorithms
        row = starts[block]
        listed = a - (a > POPULAR)
        for p in range(first[t], end[t]):
            i = by_order[p]
            kept = popular[t] if a == POPULAR else length[listed, i]
            skip = 0
            for slot in range(kept):
                if a == POPULAR:
                    skip += leaders[t, slot + skip] == i
                    b = leaders[t, slot + skip]
                    value[row] = sessions[b]
                else:
                    b = related[listed, i, slot]
                    count[row] = cooccurrence[listed, i, slot]
                    value[row] = score[listed, i, slot]
                tenant[row] = t
                algorithm[row] = a
                item[row] = i
                rank[row] = slot + 1
                other[row] = b
                row += 1
    return tenant, algorithm, item, rank, other, count, counted, value


BATCH_ROWS = 122_880  # DuckDB's row group size


def ranks(lists: Lists, item: np.ndarray, next_item: np.ndarray, tenant_of: np.ndarray) -> np.ndarray:
    """Where ``next_item[t]`` stands in ``item[t]``'s list of each algorithm of :data:`ALGORITHMS` (1 = first, 0 = absent).

    The evaluation's join of each test transition with the lists
    (``sql/evaluation.sql``), done by looking along at most ``top_n``
    entries. ``tenant_of`` gives each item's block in ``lists.leaders``
    (-1 for an item without a list), for ``popular``.
    """
    return _ranks(lists.related, lists.length, lists.leaders, tenant_of, item, next_item)


def listed_counts(lists: Lists) -> np.ndarray:
    """int64 (list, item): how many lists of each algorithm but popular hold each item (``list_index`` numbers them)."""
    return _listed_counts(lists.related, lists.length)


@numba.njit(cache=True, parallel=True)
def _listed_counts(related, length):
    n_lists, n_items, _ = related.shape
    counts = np.zeros((n_lists, n_items), np.int64)
    for listed in numba.prange(n_lists):  # each algorithm's row of counts is written by one thread
        for a in range(n_items):
            for slot in range(length[listed, a]):
                counts[listed, related[listed, a, slot]] += 1
    return counts


@numba.njit(cache=True, parallel=True)
def _ranks(related, length, leaders, tenant_of, item, next_item):
    n_algorithms = length.shape[0] + 1
    top_n = related.shape[2]
    found = np.zeros((n_algorithms, item.size), dtype=np.int32)
    for t in numba.prange(item.size):
        a, b = item[t], next_item[t]
        if a < 0 or b < 0:
            continue
        for listed in range(n_algorithms - 1):
            for slot in range(length[listed, a]):
                if related[listed, a, slot] == b:
                    found[listed + (listed >= POPULAR), t] = slot + 1
                    break
        block = tenant_of[a]
        if block < 0:
            continue
        # popular's list of a: the tenant's leaders without a, the first top_n of them (see _flatten)
        rank = 0
        for slot in range(leaders.shape[1]):
            leader = leaders[block, slot]
            if leader < 0 or rank == top_n:
                break
            if leader == a:
                continue
            rank += 1
            if leader == b:
                found[POPULAR, t] = rank
                break
    return found
