"""What a snapshot serves, staged from a build's rows: the lists rendered as JSON, their index, the catalogue.

Both engines' builds end here: a DuckDB build with its rows in memory, a
Spark build's output when ``etalage publish`` takes it in
(``engine.publish.spark_output``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from engine.publish import item_json, list_index, snapshot


def stage(
    root: Path,
    build_id: str,
    rows: pa.Table,
    products: pa.Table,
    manifest: dict,
    *,
    folders: dict[str, Path] | None = None,
) -> snapshot.Snapshot:
    """Stage a snapshot (not yet live) of ``itemitem``'s ``rows`` (in its order) and the catalogue.

    The rows' text may be dictionaries (a DuckDB build's are): each related
    product's JSON is then rendered once. ``folders`` go into the snapshot
    whole (the visual index).
    """
    tables = {
        "itemitem": lambda: item_json.reader(rows.select(["rank", "distance_score"]), rows["related_product_id"]),
        "lists": lambda: list_index.positions(rows, products).to_reader(1 << 17),
        "products": lambda: products.to_reader(1 << 17),
    }
    return snapshot.stage(root, build_id, tables, manifest, folders)


def scores(rows: list[dict], build_id: str) -> dict[str, dict]:
    """A build's ``evaluation`` rows as a manifest records them: per algorithm, without the build's own columns."""
    chosen = [dict(row) for row in rows if row["build_id"] == build_id]
    for row in chosen:
        for key in ("build_id", "parameters"):
            row.pop(key, None)
    return {row.pop("algorithm"): row for row in chosen}
