"""The counts behind every click-based list, kept between builds and changed by delta.

Four counts make every list: how many sessions viewed each product
(``item_counts``), how many sessions each tenant has (``tenant_sessions``,
the LLR's N), how many sessions each pair of products shares, and how often
one product followed another in a session's steps (the follow matrices of
``engine.udfs.sequences``, from ``counted_steps``, signed alike). A build
does not count them again from all events: it takes the sessions whose
counted products changed (``engine.pipeline.sessions``), as a table
``counted_changes`` of ``(tenant, session_id, product_id, sign)`` rows, -1
for each session as it was counted before and +1 as it counts now, and adds
what those rows count to the stored counts. Counts are integers, so the
result is exactly what counting everything again would give.

A build keeps only the matrices that the algorithms it computes rank by
(:func:`matrices` of ``algorithms.compute``): counts that keep no follow
matrix never read the sessions' steps.

Products are numbered once and for all (``items``), so stored pair counts
keep their meaning as the catalogue grows. Each matrix is kept as a base
and one delta since it (``engine.udfs.pairs.PairRows``, NumPy files in the
store): a build rewrites the small delta, and folds it into a new base only
when it has grown to a share of the base's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import sqlfiles
from engine.pipeline.sessions import drop_counted
from engine.publish.store import Store
from engine.udfs import cooccurrence, pairs, sequences
from engine.udfs.pairs import PairRows

ITEMS = pa.schema([("item", pa.int32()), ("tenant", pa.string()), ("product_id", pa.string())])
"""The ``items`` table: one number per (tenant, product) ever counted, in number order."""
FOLD_SHARE = 0.1
"""The delta is folded into a new base once it holds this share of the base's pairs."""
MATRICES = ("pairs", "next", "adjacent", "rules", "rules_both")
"""The matrices that can be kept: co-occurrence (``engine.udfs.pairs``) and the follow counts (``engine.udfs.sequences``)."""


def matrices(algorithms: Iterable[str]) -> tuple[str, ...]:
    """The matrices the kernels rank ``algorithms`` by (``engine.udfs.cooccurrence.READS``), in :data:`MATRICES` order."""
    read = {matrix for algorithm in algorithms for matrix in cooccurrence.READS[algorithm]}
    return tuple(name for name in MATRICES if name in read)


@dataclass(frozen=True)
class Kept:
    """One matrix of counts as kept: a base, one delta since it, and the store folders they are saved in."""

    base: PairRows = field(default_factory=PairRows.empty)
    delta: PairRows = field(default_factory=PairRows.empty)
    base_file: str | None = None  # a store path; None: not saved yet
    delta_file: str | None = None

    @property
    def rows(self) -> tuple[PairRows, PairRows]:
        """The stored counts: add them (with any further delta) to get the counts of every pair."""
        return self.base, self.delta

    def stored(self, delta: PairRows) -> Kept:
        """This matrix with ``delta`` kept: added to the stored delta, which is folded into the base when large."""
        if not delta.pairs:
            return self
        merged = pairs.add(self.delta, delta)
        if merged.pairs > FOLD_SHARE * self.base.pairs:
            return Kept(base=pairs.add(self.base, merged), delta=PairRows.empty(merged.start.size))
        return replace(self, delta=merged, delta_file=None)

    def saved(self, store: Store, name: str) -> Kept:
        """This matrix with any part not yet in the store written there, under ``name`` and the part."""
        files = {}
        for part, rows, file in (("base", self.base, self.base_file), ("delta", self.delta, self.delta_file)):
            if file is None and rows.pairs:
                folder = store.new("pairs", f"{name}-{part}")
                rows.save(folder)
                file = store.relative(folder)
            files[part] = file if rows.pairs else None
        return replace(self, base_file=files["base"], delta_file=files["delta"])


@dataclass(frozen=True)
class Counts:
    """Items and their session counts, tenants' session counts, and the kept matrices by name (:data:`MATRICES`)."""

    items: pa.Table  # ITEMS, row i is item i
    sessions: np.ndarray  # int64 per item: sessions that count for it now (0: none, no list)
    tenant_sessions: dict[str, int]
    kept: dict[str, Kept]

    @classmethod
    def none(cls, kept: Iterable[str] = MATRICES) -> Counts:
        """Nothing counted yet, keeping the matrices named ``kept``: a first build, or one that counts everything again."""
        return cls(ITEMS.empty_table(), np.zeros(0, np.int64), {}, {name: Kept() for name in kept})

    @property
    def follows(self) -> bool:
        """Whether these counts keep a follow matrix, which the sessions' steps (``counted_steps``) change."""
        return any(name != "pairs" for name in self.kept)

    def rows(self, deltas: dict[str, PairRows] | None = None) -> dict[str, tuple[PairRows, ...]]:
        """Each matrix's stored counts, with a further delta where ``deltas`` has one: what the list kernels add up."""
        return {name: (*kept.rows, *((deltas[name],) if deltas else ())) for name, kept in self.kept.items()}

    def item_table(self) -> cooccurrence.Items:
        """What the list kernels read: each item's tenant, product id, sessions and its tenant's sessions."""
        tenants = self.items.column("tenant").combine_chunks()
        names = pa.array(list(self.tenant_sessions), pa.string())
        sessions = np.array([*self.tenant_sessions.values(), 0], np.int64)  # last: a tenant with no sessions now
        per_item = sessions[pc.index_in(tenants, value_set=names).fill_null(len(names)).to_numpy()]
        return cooccurrence.Items(tenants, self.items.column("product_id").combine_chunks(), self.sessions, per_item)

    def with_changes(self, connection: duckdb.DuckDBPyConnection, sr_window: int) -> tuple[Counts, dict[str, PairRows]]:
        """These counts plus what the tables ``counted_changes`` and ``counted_steps`` count; and each matrix's delta alone.

        The tables are dropped once read (``sessions.drop_counted``).

        Gives new products the next numbers (``sql/new_items.sql``); the
        signed baskets of ``sql/baskets.sql`` change the sessions of each
        item (each basket holds an item once) and tenant, and count the pair
        delta; the signed steps of ``sql/step_lists.sql`` count the follow
        matrices' deltas (``sr_window``: the sequential rules' reach).
        """
        connection.register("items", self.items)
        try:
            new = sqlfiles.query(connection, "new_items", {"first": self.items.num_rows}).to_arrow_table()
            items = pa.concat_tables([self.items, new.cast(ITEMS)])
            connection.unregister("items")
            connection.register("items", items)
            baskets = sqlfiles.query(connection, "baskets").to_arrow_table()
            steps = sqlfiles.query(connection, "step_lists").to_arrow_table() if self.follows else None
        finally:
            connection.unregister("items")
        drop_counted(connection)  # read: their memory is the kernels' now
        lists = baskets.column("items").combine_chunks()
        signs = baskets.column("sign").to_numpy().astype(np.int32)
        each = np.repeat(signs, pc.list_value_length(lists).to_numpy())
        # Summed as whole floats, which are exact far past any count of sessions.
        sessions = np.bincount(lists.flatten().to_numpy(), weights=each, minlength=items.num_rows).astype(np.int64)
        sessions[: self.sessions.size] += self.sessions
        tenant_sessions = dict(self.tenant_sessions)
        by_tenant = (
            pa.table({"tenant": baskets.column("tenant"), "sign": signs})
            .group_by("tenant")
            .aggregate([("sign", "sum")])
        )
        for tenant, change in zip(by_tenant["tenant"].to_pylist(), by_tenant["sign_sum"].to_pylist(), strict=True):
            tenant_sessions[tenant] = tenant_sessions.get(tenant, 0) + change
        if (sessions < 0).any() or any(n < 0 for n in tenant_sessions.values()):
            msg = "counted changes take more sessions away than were counted: the stored counts do not match the events"
            raise RuntimeError(msg)
        deltas = {"pairs": pairs.count(lists, signs, items.num_rows)} if "pairs" in self.kept else {}
        if steps is not None:
            step_lists = steps.column("items").combine_chunks()
            step_signs = steps.column("sign").to_numpy().astype(np.int32)
            kept = {name: following for name, following in sequences.matrices(sr_window).items() if name in self.kept}
            deltas |= sequences.count(step_lists, step_signs, items.num_rows, kept)
        tenant_sessions = {t: n for t, n in tenant_sessions.items() if n > 0}
        return replace(self, items=items, sessions=sessions, tenant_sessions=tenant_sessions), deltas

    def stored(self, deltas: dict[str, PairRows]) -> Counts:
        """These counts with ``deltas`` kept (:meth:`Kept.stored`); a matrix without one stays as it is."""
        return replace(
            self, kept={name: kept.stored(deltas[name]) if name in deltas else kept for name, kept in self.kept.items()}
        )

    def numbered_as(self, later: Counts) -> Counts:
        """These counts over ``later``'s items, which number these items alike and then others (without sessions here).

        ``later`` is these counts with changes (:meth:`with_changes`), which
        gives new products the next numbers.
        """
        if not later.items.slice(0, self.items.num_rows).equals(self.items):
            msg = "the later counts must number these counts' items alike"
            raise ValueError(msg)
        sessions = np.zeros(later.items.num_rows, np.int64)
        sessions[: self.sessions.size] = self.sessions
        return replace(self, items=later.items, sessions=sessions)

    def saved(self, store: Store, build_id: str) -> Counts:
        """These counts with any matrix part not yet in the store written there (under ``build_id``)."""
        return replace(self, kept={name: kept.saved(store, f"{build_id}-{name}") for name, kept in self.kept.items()})
