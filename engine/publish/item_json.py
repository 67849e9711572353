"""``itemitem`` rows rendered as the API's JSON, for a snapshot's ``item_json`` column.

``sql/snapshot_itemitem.sql`` is the definition: each row as
``{"product_id":...,"rank":...,"score":...},``. Rendering tens of millions of
rows is mostly formatting their scores, so this does it the fast way and
gives the same JSON values: each product id's ``{"product_id":"…","rank":``
is rendered once (by ``json``, so it is escaped as JSON requires), the
scores of a whole batch by orjson (shortest round-trip text, like Python's
``repr``; about four times faster than DuckDB's or Arrow's float casts), and
a compiled pass puts the pieces together.
"""

from __future__ import annotations

import json

import numba
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc


def reader(rows: pa.Table, related: pa.ChunkedArray) -> pa.RecordBatchReader:
    """``rows`` with their ``item_json`` column added; ``related`` is their ``related_product_id``, perhaps a dictionary.

    One record batch at a time, as the snapshot writes them, so the rendered
    bytes of all rows are never in memory at once. Each related product's
    JSON is rendered once for the whole table.
    """
    target = rows.schema.append(pa.field("item_json", pa.string()))
    related = one_dictionary(related)
    prefixes = _prefixes(related.chunk(0).dictionary) if related.num_chunks else None

    def batches():
        offset = 0
        for batch in rows.to_batches():
            indices = pa.chunked_array(related.slice(offset, batch.num_rows).chunks).combine_chunks().indices
            offset += batch.num_rows
            json_rows = _rendered(prefixes, indices, batch.column("rank"), batch.column("distance_score"))
            yield pa.RecordBatch.from_arrays([*batch.columns, json_rows], schema=target)

    return pa.RecordBatchReader.from_batches(target, batches())


def one_dictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``column`` as a dictionary with one for all its chunks: as it is when they share one (a kernel's do), else unified."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    first = column.chunk(0).dictionary if column.num_chunks else None
    if all(chunk.dictionary.equals(first) for chunk in column.chunks):
        return column
    return column.unify_dictionaries()


def rendered(related: pa.Array, rank: pa.Array, score: pa.Array) -> pa.StringArray:
    """Each row's ``{"product_id":related,"rank":rank,"score":score},``; no NULLs (verification refuses them)."""
    products = related if pa.types.is_dictionary(related.type) else pc.dictionary_encode(related)
    return _rendered(_prefixes(products.dictionary), products.indices, rank, score)


def _prefixes(names: pa.Array) -> pa.StringArray:
    """``{"product_id":"<name>","rank":`` for each name, escaped as JSON requires.

    Names that JSON need not escape (no quote, backslash, control or
    non-ASCII character: every product id of a shop's URLs) are joined in one
    vectorised pass; only the others go through ``json.dumps``.
    """
    plain = pc.match_substring_regex(names, r"^[\x20-\x21\x23-\x5b\x5d-\x7e]*$")
    joined = pc.binary_join_element_wise('{"product_id":"', names, '","rank":', "")
    if pc.all(plain).as_py() is not False:
        return joined
    escaped = [f'{{"product_id":{json.dumps(name)},"rank":' for name in names.to_pylist()]
    return pc.if_else(plain, joined, pa.array(escaped, pa.string()))


def _rendered(prefixes: pa.StringArray, indices: pa.Array, rank: pa.Array, score: pa.Array) -> pa.StringArray:
    _, prefix_offsets, prefix_data = prefixes.buffers()
    scores = orjson.dumps(score.to_numpy(zero_copy_only=False), option=orjson.OPT_SERIALIZE_NUMPY)
    offsets, data = _assembled(
        np.frombuffer(prefix_offsets, np.int32, len(prefixes) + 1, prefixes.offset * 4),
        np.frombuffer(prefix_data, np.uint8),
        indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
        rank.to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
        np.frombuffer(scores, np.uint8),
    )
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))


@numba.njit(cache=True, parallel=True)
def _assembled(prefix_offsets, prefix_data, related, rank, scores):
    """Offsets and bytes of the rendered rows; ``scores`` is orjson's ``[s0,s1,...]`` of the same rows."""
    n = related.size
    score_start = np.empty(n, np.int64)
    score_end = np.empty(n, np.int64)
    position = 1  # past "["
    for i in range(n):
        score_start[i] = position
        while scores[position] != 44 and scores[position] != 93:  # "," or "]"
            position += 1
        score_end[i] = position
        position += 1
    offsets = np.empty(n + 1, np.int32)
    total = 0
    for i in range(n):
        offsets[i] = total
        digits = 1
        r = rank[i]
        while r >= 10:
            r //= 10
            digits += 1
        prefix = prefix_offsets[related[i] + 1] - prefix_offsets[related[i]]
        total += prefix + digits + 9 + (score_end[i] - score_start[i]) + 2
    offsets[n] = total
    data = np.empty(total, np.uint8)
    score_label = np.array([44, 34, 115, 99, 111, 114, 101, 34, 58], np.uint8)  # ,"score":
    for i in numba.prange(n):
        out = offsets[i]
        for b in range(prefix_offsets[related[i]], prefix_offsets[related[i] + 1]):
            data[out] = prefix_data[b]
            out += 1
        r = rank[i]
        digits = 1
        while r >= 10**digits:
            digits += 1
        for d in range(digits - 1, -1, -1):
            data[out + d] = 48 + r % 10
            r //= 10
        out += digits
        for b in range(9):
            data[out] = score_label[b]
            out += 1
        for b in range(score_start[i], score_end[i]):
            data[out] = scores[b]
            out += 1
        data[out] = 125  # }
        data[out + 1] = 44  # ,
    return offsets, data
