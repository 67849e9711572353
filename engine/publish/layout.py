"""Where each list's rows go in a snapshot: identical lists share one run, and lists unchanged since the live snapshot stay where they are.

A build's lists are mostly what the live snapshot already serves: an hour
of new events changes a few thousand lists of most algorithms, and every
score of ``llr``'s and ``popular``'s (which depend on the sessions counted). So a
snapshot's ``item_json`` rows are held in *parts*: the files of the live
snapshot whose rows are still mostly served are hard-linked into the new
one, and only the other lists are rendered and written, into a part of its
own (``itemitem.arrow``). Within the written lists, identical ones (every
``popular`` list of a product outside the top) are written once and share
their run. ``lists.arrow`` points each list at its run in the parts laid end
to end.

Lists are compared by a 128-bit digest of what the API serves of them (each
related product's id, rank and score), kept in ``lists.arrow``: two lists
with different rows have the same digest with odds of about 2^-128 each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.publish import snapshot

log = logging.getLogger("etalage.snapshots")

OWN_PART = snapshot.OWN_PART
"""The part a snapshot writes itself; a reused part is named ``itemitem.<the build that wrote it>.arrow``."""
REUSED_SHARE = 0.5
"""A live part is reused while at least this share of its rows is still served; else its lists are written again."""


@dataclass
class Layout:
    """Where a snapshot's lists go: ``lists`` with their runs in the parts, and what to write and link."""

    lists: pa.Table
    """lists.arrow: :data:`engine.publish.list_index.SCHEMA` with ``first_row`` in the parts laid end to end, and ``digest``."""
    written: np.ndarray | None
    """The rows of the build's ``itemitem`` to write into :data:`OWN_PART`, in order; None: all of them."""
    linked: dict[str, tuple[Path, dict]] = field(default_factory=dict)
    """Live parts hard-linked in, in order: new name -> (the live file, its manifest entry)."""
    unlisted_rows: int = 0
    """Rows of the linked parts that no list points at any more."""

    @property
    def parts(self) -> list[str]:
        """The parts in order: :data:`OWN_PART` comes last."""
        return [*self.linked, OWN_PART]


def plan(source: pa.Table, rows: pa.Table, related: pa.ChunkedArray, live: dict | None) -> Layout:
    """Lay out ``source`` (``engine.publish.list_index.positions`` of ``rows``) against the live snapshot.

    ``related`` is the rows' ``related_product_id`` as one dictionary.
    ``live`` is what :func:`reusable` found of the live snapshot, or None:
    every list is then written (identical ones once).
    """
    first, count = source.column("first_row").to_numpy(), source.column("rows").to_numpy()
    digest = digests(first, count, rows, related)
    fresh = count > 0
    linked: dict[str, tuple[Path, dict]] = {}
    final = np.zeros(first.size, np.int64)
    offset = unlisted = 0
    if live is not None:
        same = fresh & (live["rows"] == count) & np.all(live["digest"] == digest, axis=1)
        part = np.searchsorted(live["offsets"], live["first_row"], side="right") - 1
        _, where = np.unique(live["first_row"][same], return_index=True)
        served = np.bincount(part[same][where], weights=count[same][where], minlength=len(live["parts"]))
        for number, (name, path, entry) in enumerate(live["parts"]):
            kept = same & (part == number)
            if served[number] < REUSED_SHARE * entry["rows"] or not kept.any():
                continue
            final[kept] = live["first_row"][kept] - live["offsets"][number] + offset
            linked[name] = (path, entry)
            offset += entry["rows"]
            unlisted += entry["rows"] - int(served[number])
            fresh &= ~kept
    written = None
    chosen = np.flatnonzero(fresh)
    if chosen.size:
        heads, group = _distinct(chosen, count, digest)
        order = np.argsort(first[heads], kind="stable")  # the written runs keep itemitem's order
        lengths = count[heads[order]].astype(np.int64)
        starts = np.empty(order.size, np.int64)
        starts[order] = offset + np.r_[0, np.cumsum(lengths)[:-1]]
        final[chosen] = starts[group]
        if linked or heads.size < chosen.size or lengths.sum() != rows.num_rows:
            written = _runs(first[heads[order]], lengths)
    elif linked or rows.num_rows:
        written = np.zeros(0, np.int64)
    lists = source.set_column(source.schema.get_field_index("first_row"), "first_row", pa.array(final))
    lists = lists.append_column("digest", pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), digest.shape[0], [None, pa.py_buffer(np.ascontiguousarray(digest))]
    ))  # fmt: skip
    return Layout(lists, written, linked, unlisted)


def reusable(folder: Path, manifest: dict, products: pa.Table, algorithms: list[str]) -> dict | None:
    """What of the live snapshot at ``folder`` a new one can reuse, or None when it has nothing reusable.

    Its lists must be laid out like the new ones (the same catalogue, in the
    same order, and the same algorithms) and carry digests (snapshots of
    format 4 on), and its lists and catalogue must still be what its
    manifest says (the parts are checked when linked: :func:`checked`).
    """
    if manifest.get("format") != snapshot.FORMAT:
        return None
    parts, offsets = [], [0]
    try:
        for name in ("lists.arrow", "products.arrow"):
            snapshot.verify_file(folder / name, manifest["files"][name])
        lists = snapshot.read_table(folder / "lists.arrow")
        same_catalogue = snapshot.read_table(folder / "products.arrow").equals(products)
        for name in snapshot.parts(manifest):
            entry = manifest["files"][name]
            writer = manifest["build_id"] if name == OWN_PART else name.split(".", 1)[1].removesuffix(".arrow")
            parts.append((f"itemitem.{writer}.arrow", folder / name, entry))
            offsets.append(offsets[-1] + entry["rows"])
    except (OSError, KeyError, pa.ArrowException, snapshot.SnapshotInvalid) as error:
        log.warning("not reusing the live snapshot %s: %s", folder.name, error)
        return None
    if not same_catalogue or pc.unique(lists.column("algorithm")).to_pylist() != algorithms:
        return None
    digest = lists.column("digest").combine_chunks()
    return {
        "parts": parts,
        "offsets": np.array(offsets[:-1], np.int64),
        "first_row": lists.column("first_row").to_numpy(),
        "rows": lists.column("rows").to_numpy(),
        "digest": np.frombuffer(digest.buffers()[1], np.uint64, 2 * len(digest), digest.offset * 16).reshape(-1, 2),
    }


def checked(planned: Layout) -> bool:
    """Whether the live parts ``planned`` links are still what their manifest says, so that no damage is carried on."""
    for path, entry in planned.linked.values():
        try:
            snapshot.verify_file(path, entry)
        except snapshot.SnapshotInvalid as error:
            log.warning("not reusing the live snapshot's parts: %s", error)
            return False
    return True


def digests(first: np.ndarray, count: np.ndarray, rows: pa.Table, related: pa.ChunkedArray) -> np.ndarray:
    """Each list's 128-bit digest (two uint64 per list) of its related products' ids, ranks and scores; zero when empty."""
    dictionary = related.chunk(0).dictionary if related.num_chunks else pa.array([], pa.string())
    names = pc.cast(dictionary, pa.large_string())
    _, offsets, data = names.buffers()
    name_hashes = _string_hashes(
        np.frombuffer(offsets, np.int64, len(names) + 1, names.offset),
        np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8),
    )
    indices = pa.chunked_array([chunk.indices for chunk in related.chunks], related.type.index_type)
    return _list_digests(
        first, count, _numpy(indices), _numpy(rows.column("rank")), _numpy(rows.column("distance_score")), name_hashes
    )


def _distinct(chosen: np.ndarray, count: np.ndarray, digest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first of each set of identical lists among ``chosen``, and each chosen list's set (an index into the first)."""
    # Identical lists have the same first half of the digest, so they sort together by it alone; lists that
    # differ yet share it (odds of 2^-64) may interleave, and are then merely written apart.
    order = np.argsort(digest[chosen, 0], kind="stable")
    keys = (count[chosen][order], digest[chosen, 0][order], digest[chosen, 1][order])
    new = np.ones(order.size, bool)
    new[1:] = np.any([np.diff(key) != 0 for key in keys], axis=0)
    group = np.empty(order.size, np.int64)
    group[order] = np.cumsum(new) - 1
    return chosen[order[new]], group


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column without NULLs as one array: its one chunk's buffer, else a copy."""
    chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return chunk.to_numpy() if column.num_chunks else np.zeros(0, column.type.to_pandas_dtype())


@numba.njit(cache=True)
def _runs(starts, lengths):
    """The row numbers of runs (start, length) laid end to end."""
    out = np.empty(lengths.sum(), np.int64)
    row = 0
    for run in range(starts.size):
        for offset in range(lengths[run]):
            out[row] = starts[run] + offset
            row += 1
    return out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True)
def _mixed(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser: every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True)
def _string_hashes(offsets, data):
    """Two 64-bit FNV-1a hashes of each string (of different bases), mixed."""
    out = np.empty((offsets.size - 1, 2), np.uint64)
    for i in range(offsets.size - 1):
        a = np.uint64(0xCBF29CE484222325)
        b = np.uint64(0x84222325CBF29CE4)
        for j in range(offsets[i], offsets[i + 1]):
            a = (a ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
            b = (b ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i, 0] = _mixed(a)
        out[i, 1] = _mixed(b ^ np.uint64(offsets[i + 1] - offsets[i]))
    return out


@numba.njit(cache=True, parallel=True)
def _list_digests(first, count, related, rank, scores, names):
    score = scores.view(np.uint64)
    out = np.zeros((first.size, 2), np.uint64)
    for i in numba.prange(first.size):
        a = np.uint64(count[i])
        b = ~np.uint64(count[i])
        for r in range(first[i], first[i] + count[i]):
            row = _mixed(score[r] ^ (np.uint64(rank[r]) * _GOLDEN))  # score: the float's bits
            a = _mixed(a * _GOLDEN + (names[related[r], 0] ^ row))
            b = _mixed(b * _GOLDEN + (names[related[r], 1] ^ _mixed(row)))
        if count[i] > 0:
            out[i, 0] = a
            out[i, 1] = b
    return out


def manifest_entry(layout: Layout) -> dict:
    """What the manifest records of the layout, beside its files."""
    return {"itemitem_parts": layout.parts, "unlisted_rows": layout.unlisted_rows}
