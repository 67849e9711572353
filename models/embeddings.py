"""The embeddings cache: one vector per (image content, model), kept in DuckDB so a rebuild encodes only what is new.

Encoding is the slow part of the visual recommender (tens of images a second
on a CPU), while a shop's photos barely change between hourly builds. So
vectors are stored in a table keyed by the sha256 of the image file's bytes
and the encoder's ``model_id``: a renamed or re-uploaded but identical photo
is not encoded again, a changed photo is (its hash changes), and switching
models never mixes vectors from two networks.

The table lives in whatever DuckDB connection is passed in; a build passes
a file of its own (``engine.pipeline.visual_stage``), so that what was encoded
survives a build that fails or is refused. ``vector`` is a ``FLOAT[]`` list
rather than a fixed ``FLOAT[1280]`` array so that vectors of several models
(1280 for EfficientNet-Lite0, a CLIP model's embedding width) can share it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from models.encoder import Encoder, ImageError, Progress

TABLE = "embeddings"

STORE_EVERY = 1_024
"""Vectors encoded between writes to the cache, so a build stopped half-way keeps most of its work."""

_COLUMNS = """
    image_sha256 VARCHAR NOT NULL,  -- sha256 of the image file's bytes
    model_id VARCHAR NOT NULL,      -- the encoder, its weights and its preprocessing
    vector FLOAT[] NOT NULL,        -- the encoder's output, dim floats
    encoded_at TIMESTAMP NOT NULL   -- when it was computed (UTC)
"""


@dataclass
class EncodeStats:
    """What :func:`vectors_for` did: images asked for, found in the cache, encoded, and skipped as unreadable."""

    images: int = 0
    distinct: int = 0
    cached: int = 0
    encoded: int = 0
    skipped: list[str] = field(default_factory=list)


def ensure_table(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the ``embeddings`` table if the connection's database has none."""
    connection.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({_COLUMNS})")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks.

    Raises:
        ImageError: the file does not exist or cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        msg = f"{path}: image file does not exist"
        raise ImageError(msg) from None
    except OSError as error:
        msg = f"{path}: image file cannot be read ({error})"
        raise ImageError(msg) from None
    return digest.hexdigest()


def cached(
    connection: duckdb.DuckDBPyConnection, model_id: str, hashes: Sequence[str], dim: int
) -> dict[str, np.ndarray]:
    """The stored vectors of ``model_id`` for those of ``hashes`` that the table has.

    Raises:
        ValueError: a stored vector's length is not ``dim`` (the table was written by another encoder under the same id).
    """
    ensure_table(connection)
    wanted = pa.table({"image_sha256": pa.array(sorted(set(hashes)), pa.string())})
    connection.register("wanted_hashes", wanted)
    try:
        found = connection.execute(
            f"""
            SELECT e.image_sha256, e.vector
            FROM {TABLE} AS e JOIN wanted_hashes AS w USING (image_sha256)
            WHERE e.model_id = $model_id
            """,
            {"model_id": model_id},
        ).to_arrow_table()
    finally:
        connection.unregister("wanted_hashes")
    if found.num_rows == 0:
        return {}
    vectors = found.column("vector").combine_chunks()
    lengths = np.diff(vectors.offsets.to_numpy())
    if (lengths != dim).any():
        msg = f"{TABLE} holds vectors of length {int(lengths[lengths != dim][0])} for model {model_id!r}, which makes {dim}"
        raise ValueError(msg)
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
    return dict(zip(found.column("image_sha256").to_pylist(), matrix, strict=True))


def store(connection: duckdb.DuckDBPyConnection, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
    """Add vectors for ``hashes`` (one row of ``vectors`` each) unless the table already has them for this model."""
    if len(hashes) != len(vectors):
        msg = f"{len(hashes)} hashes but {len(vectors)} vectors"
        raise ValueError(msg)
    if not len(hashes):
        return
    ensure_table(connection)
    values = np.ascontiguousarray(vectors, dtype=np.float32)
    rows = pa.table(
        {
            "image_sha256": pa.array(list(hashes), pa.string()),
            "model_id": pa.array([model_id] * len(hashes), pa.string()),
            "vector": pa.ListArray.from_arrays(
                pa.array(np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)), pa.array(values.ravel())
            ),
            "encoded_at": pa.array([dt.datetime.now(dt.UTC).replace(tzinfo=None)] * len(hashes), pa.timestamp("us")),
        }
    )
    connection.register("new_embeddings", rows)
    try:
        connection.execute(
            f"""
            INSERT INTO {TABLE}
            SELECT n.* FROM new_embeddings AS n
            WHERE NOT EXISTS (
                SELECT 1 FROM {TABLE} AS e WHERE e.image_sha256 = n.image_sha256 AND e.model_id = n.model_id
            )
            """
        )
    finally:
        connection.unregister("new_embeddings")


def vectors_for(
    connection: duckdb.DuckDBPyConnection,
    encoder: Encoder,
    images: Sequence[str | os.PathLike],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    skip_unreadable: bool = False,
) -> tuple[np.ndarray, np.ndarray, EncodeStats]:
    """The encoder's vector for each image file, encoding only images the cache lacks, and storing those.

    Files with the same bytes are hashed separately but encoded once. With
    ``skip_unreadable``, a missing or undecodable file is left out (its row of
    the returned mask is False and its message is in ``stats.skipped``)
    instead of stopping everything.

    Returns:
        ``(vectors, present, stats)``: a float32 ``(len(images), dim)`` matrix
        (rows of skipped images are zero), a boolean mask of the rows that
        hold a vector, and what was done.

    Raises:
        ImageError: an image is missing or unreadable (unless ``skip_unreadable``).
    """
    stats = EncodeStats(images=len(images))
    hashes: list[str | None] = []
    for image in images:
        try:
            hashes.append(file_sha256(image))
        except ImageError as error:
            if not skip_unreadable:
                raise
            stats.skipped.append(str(error))
            hashes.append(None)
    known = [h for h in hashes if h is not None]
    stats.distinct = len(set(known))
    found = cached(connection, encoder.model_id, known, encoder.dim)
    stats.cached = len(found)

    missing: dict[str, Path] = {}
    for image, digest in zip(images, hashes, strict=True):
        if digest is not None and digest not in found and digest not in missing:
            missing[digest] = Path(image)
    new = _encode(connection, encoder, missing, batch_size, progress, skip_unreadable, stats)
    found.update(new)
    stats.encoded = len(new)

    vectors = np.zeros((len(images), encoder.dim), dtype=np.float32)
    present = np.zeros(len(images), dtype=bool)
    for row, digest in enumerate(hashes):
        if digest in found:
            vectors[row] = found[digest]
            present[row] = True
    return vectors, present, stats


def _encode(
    connection: duckdb.DuckDBPyConnection,
    encoder: Encoder,
    missing: dict[str, Path],
    batch_size: int,
    progress: Progress | None,
    skip_unreadable: bool,
    stats: EncodeStats,
) -> dict[str, np.ndarray]:
    """Encode the ``missing`` images batch by batch, storing them every :data:`STORE_EVERY` and when stopped.

    An unreadable image raises (after its batch's other vectors are kept), or
    with ``skip_unreadable`` is named in ``stats.skipped``.
    """
    digests, paths = list(missing), list(missing.values())
    out: dict[str, np.ndarray] = {}
    pending: dict[str, np.ndarray] = {}

    def flush() -> None:
        vectors = np.array(list(pending.values()), dtype=np.float32).reshape(-1, encoder.dim)
        store(connection, encoder.model_id, list(pending), vectors)
        pending.clear()

    try:
        with closing(encoder.encode_batches(paths, batch_size=batch_size)) as batches:
            for batch in batches:
                new = {digests[index]: vector for index, vector in zip(batch.indices, batch.vectors, strict=True)}
                out.update(new)
                pending.update(new)
                if batch.errors and not skip_unreadable:
                    raise batch.errors[0]
                stats.skipped += [str(error) for error in batch.errors]
                if len(pending) >= STORE_EVERY:
                    flush()
                if progress is not None:
                    progress(batch.done, len(paths))
    finally:
        flush()  # what was encoded before a failure or an interrupt is kept for the next build
    return out
