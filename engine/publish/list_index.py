"""A snapshot's lists.arrow: where each (algorithm, catalogue product)'s list starts in itemitem.arrow, and its length.

``sql/snapshot_lists.sql`` is the definition. The rows come in
``itemitem``'s order, so every list is one run that starts at its rank 1;
finding those starts, and placing each at its algorithm's block and its
product's row of the catalogue, takes a few vectorised passes instead of a
join and a sort over every (algorithm, product).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMA = pa.schema(
    [
        ("algorithm", pa.string()),
        ("tenant", pa.string()),
        ("product_id", pa.string()),
        ("first_row", pa.int64()),
        ("rows", pa.int32()),
    ]
)


def positions(rows: pa.Table, products: pa.Table) -> pa.Table:
    """One row per algorithm (in name order) and catalogue product (in ``products``' order): the list's first row and length.

    ``rows`` are ``itemitem``'s rows in its order (at least ``algorithm``,
    ``tenant``, ``product_id`` and ``rank``); a product without a list has 0 rows.
    """
    rank = rows.column("rank").to_numpy()
    starts = np.flatnonzero(rank == 1)
    lengths = np.diff(np.r_[starts, rank.size]).astype(np.int32)
    heads = rows.select(["algorithm", "tenant", "product_id"]).take(pa.array(starts)).combine_chunks()
    heads = heads.cast(pa.schema([(name, pa.string()) for name in heads.column_names]))
    catalogue = pa.table(
        {
            "tenant": products.column("tenant"),
            "product_id": products.column("product_id"),
            "product_row": pa.array(np.arange(products.num_rows, dtype=np.int64)),
        }
    )
    located = heads.append_column("head", pa.array(np.arange(starts.size, dtype=np.int64))).join(
        catalogue, keys=["tenant", "product_id"], join_type="inner"
    )
    algorithms = sorted(pc.unique(heads.column("algorithm")).to_pylist())
    block = pc.index_in(located.column("algorithm"), pa.array(algorithms, pa.string())).to_numpy()
    slot = block * products.num_rows + located.column("product_row").to_numpy()
    head = located.column("head").to_numpy()
    first_row = np.zeros(len(algorithms) * products.num_rows, np.int64)
    count = np.zeros(len(algorithms) * products.num_rows, np.int32)
    first_row[slot] = starts[head]
    count[slot] = lengths[head]

    def repeated(column: str) -> pa.Array:
        values = products.column(column).cast(pa.string()).combine_chunks()
        return pa.concat_arrays([values] * len(algorithms)) if algorithms else pa.array([], pa.string())

    names = pa.array(np.repeat(np.array(algorithms, dtype=object), products.num_rows), pa.string())
    return pa.table([names, repeated("tenant"), repeated("product_id"), first_row, count], schema=SCHEMA)
