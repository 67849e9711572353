"""What a snapshot serves, staged from a build's rows: the lists rendered as JSON, their index, the catalogue.

Both engines' builds end here: a DuckDB build with its rows in memory, a
Spark build's output when ``etalage publish`` takes it in
(``engine.publish.spark_output``).
"""

from __future__ import annotations

import concurrent.futures
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from engine.publish import item_json, layout, list_index, snapshot

log = logging.getLogger("etalage.snapshots")


def stage(
    root: Path,
    build_id: str,
    rows: pa.Table,
    products: pa.Table,
    manifest: snapshot.Manifest,
    *,
    folders: dict[str, Path] | None = None,
    live: snapshot.Snapshot | None = None,
) -> snapshot.Snapshot:
    """Stage a snapshot (not yet live) of ``itemitem``'s ``rows`` (in its order) and the catalogue.

    The rows' text may be dictionaries (a DuckDB build's are): each related
    product's JSON is then rendered once. ``folders`` go into the snapshot
    whole (the visual index). The lists that the ``live`` snapshot already
    serves as they are stay in its files, hard-linked in, and so does its
    catalogue when unchanged (``engine.publish.layout``).
    """
    related = item_json.one_dictionary(rows["related_product_id"])
    source = list_index.positions(rows, products)
    algorithms = pc.unique(source.column("algorithm")).to_pylist()
    reusable = layout.reusable(live.path, live.manifest, products, algorithms) if live else None
    planned = layout.plan(source, rows, related, reusable)
    if not planned.linked:
        return _staged(root, build_id, planned, rows, related, products, manifest, folders, None)
    # The linked parts' checksums are read while the rest is written; a part that fails means writing it all.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checking") as checking:
        checked = checking.submit(layout.checked, planned)
        try:
            staged = _staged(root, build_id, planned, rows, related, products, manifest, folders, live)
        except snapshot.NotLinkable as error:
            log.warning("writing every list: %s", error)
        except snapshot.SnapshotInvalid:
            if checked.result():
                raise
        else:
            if checked.result():
                return staged
            snapshot.discard(staged)
    planned = layout.plan(source, rows, related, None)
    return _staged(root, build_id, planned, rows, related, products, manifest, folders, None)


def _staged(
    root: Path,
    build_id: str,
    planned: layout.Layout,
    rows: pa.Table,
    related: pa.ChunkedArray,
    products: pa.Table,
    manifest: snapshot.Manifest,
    folders: dict[str, Path] | None,
    live: snapshot.Snapshot | None,
) -> snapshot.Snapshot:
    """Stage the snapshot ``planned`` lays out: its written rows rendered, its linked parts (and ``live``'s catalogue) linked."""
    served = rows.select(["rank", "distance_score"])
    if planned.written is not None:
        indices = pa.array(planned.written)
        served = pa.Table.from_batches(served.take(indices).to_batches(max_chunksize=1 << 17), served.schema)
        related = related.take(indices)
    tables = {
        "itemitem": lambda: item_json.reader(served, related),
        "lists": lambda: planned.lists.to_reader(1 << 17),
    }
    linked = dict(planned.linked)
    if live is not None:
        linked["products.arrow"] = (live.path / "products.arrow", live.manifest["files"]["products.arrow"])
    else:
        tables["products"] = lambda: products.to_reader(1 << 17)
    entry = layout.manifest_entry(planned)
    own = (lambda: {**manifest(), **entry}) if callable(manifest) else {**manifest, **entry}
    return snapshot.stage(root, build_id, tables, own, folders, linked)


def scores(rows: list[dict], build_id: str) -> dict[str, dict]:
    """A build's ``evaluation`` rows as a manifest records them: per algorithm, without the build's own columns."""
    chosen = [dict(row) for row in rows if row["build_id"] == build_id]
    for row in chosen:
        for key in ("build_id", "parameters"):
            row.pop(key, None)
    return {row.pop("algorithm"): row for row in chosen}
