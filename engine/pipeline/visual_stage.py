"""The build's visual stage: the catalogue's pictures to an Annoy index and ``visual`` rows, when ``[visual] enabled``.

``models/`` holds the encoder and the index; this is the glue a build needs.
It opens the configured encoder (saying how to install it when PyTorch is
missing), reads each product's picture from ``products.image``, keeps the
vectors in the ``embeddings`` table of a cache file of its own (so an hourly
build encodes only new or changed photos), and saves the index into a
folder that the snapshot takes in whole.

The cache is a DuckDB file beside the warehouse, not a table in it: vectors
are committed to it every ``models.embeddings.STORE_EVERY`` pictures, and
they stay there when the build fails, is killed or is refused by the gate
(the new warehouse file is thrown away then). A first build that encodes a
large catalogue for an hour must not start again from nothing.

PyTorch is imported only here and only when the stage runs, so a build
without ``[visual]`` never loads it. Before it is, the stage asks OpenMP's
waiting threads to sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``,
unless set): the network's threads share the cores with the processes that
decode the next pictures, and spinning took the time those needed (on two
busy cores, 53 ms of CPU per picture instead of 29).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from engine.config import Config

INDEX_FOLDER = "visual"
"""The snapshot's subfolder that holds the Annoy index (``models.index`` layout)."""


class VisualUnavailable(RuntimeError):
    """The visual stage cannot run: the extra is not installed, the weights are missing, or no product has a picture."""


@dataclass
class VisualOutput:
    """What the stage made: the ``visual`` itemitem rows, the saved index, and what encoding did."""

    rows: pa.Table
    index_folder: Path
    images: int
    cached: int
    encoded: int
    skipped: list[str] = field(default_factory=list)


def cache_path(config: Config) -> Path:
    """The embeddings cache file: ``visual.cache``, or ``embeddings.duckdb`` beside the warehouse."""
    return config.visual.cache or config.warehouse.with_name("embeddings.duckdb")


def compute(
    connection: duckdb.DuckDBPyConnection, config: Config, folder: Path, progress: Callable[..., None]
) -> VisualOutput:
    """Encode (through the ``embeddings`` cache), index and list look-alikes for every product of ``products`` with a picture.

    ``progress(done, total, description)`` hears of the three long phases:
    the encoding (minutes on a CPU for new pictures), the neighbour graph of
    the index, and the listing of every product's look-alikes (one query each).

    A picture that is missing or cannot be decoded is left out and reported
    (``skipped``); one bad upload must not stop an hourly build.

    Raises:
        VisualUnavailable: no PyTorch or Annoy, no weights, or no readable picture at all.
    """
    # Read once, when PyTorch's OpenMP loads: so before the imports below (the module's docstring says why).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from models import encoder as encoders
        from models import visual
    except ImportError as error:
        msg = f"[visual] enabled needs PyTorch and Annoy: pip install 'etalage[visual]' ({error})"
        raise VisualUnavailable(msg) from None
    settings = config.visual
    try:
        encoder = encoders.open_encoder(
            settings.encoder, model=settings.model, pretrained=settings.pretrained, checkpoint=settings.checkpoint
        )
    except encoders.EncoderError as error:
        raise VisualUnavailable(f"visual.encoder: {error}") from None
    catalogue = connection.table("products").select("tenant, product_id, image").to_arrow_table()
    if catalogue.column("image").null_count == catalogue.num_rows:
        msg = f"[visual] is enabled but no product in {config.catalogue} names a picture in its `image` column"
        raise VisualUnavailable(msg)
    assert isinstance(config.catalogue, Path), "the config refuses [visual] with a remote catalogue"
    cache = cache_path(config)
    try:
        with duckdb.connect(str(cache)) as vectors:
            result = visual.run(
                vectors,
                catalogue,
                config.catalogue.parent,
                encoder,
                metric=settings.metric,
                n_trees=settings.n_trees,
                search_k=settings.search_k,
                dims=settings.dims or None,
                candidates=settings.candidates,
                neighbours=settings.neighbours,
                top_n=config.algorithms.top_n,
                batch_size=settings.batch_size,
                skip_unreadable=True,
                progress=lambda done, total: progress(done, total, "encoding pictures"),
                index_progress=lambda done, total: progress(done, total, "linking look-alikes"),
                rows_progress=lambda done, total: progress(done, total, "listing look-alikes"),
            )
    except duckdb.Error as error:
        raise VisualUnavailable(f"visual.cache: {cache} cannot be used as the embeddings cache ({error})") from None
    except ValueError as error:  # settings the index refuses for these vectors, e.g. dims >= the encoder's width
        raise VisualUnavailable(f"[visual]: {error}") from None
    if result.index.items.num_rows == 0:
        msg = f"[visual] is enabled but none of the pictures named in {config.catalogue} can be read"
        raise VisualUnavailable(msg)
    result.index.save(folder)
    stats = result.stats
    return VisualOutput(result.rows, folder, stats.images, stats.cached, stats.encoded, stats.skipped)
