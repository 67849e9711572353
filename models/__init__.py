"""Visual similarity: image encoders, the embeddings cache and the Annoy index.

``encoder`` (the interface), ``efficientnet`` and ``clip`` (the two backends)
import torch; ``embeddings`` (the cache in DuckDB), ``index`` (the Annoy
forests, which the server memory-maps) and ``visual`` (the build's one call)
do not import torch until an encoder is used. This file imports nothing heavy, so the
config can name the choices without loading either.
"""

from typing import Literal, get_args

Encoder = Literal["efficientnet-lite0", "open_clip"]
ENCODERS: tuple[Encoder, ...] = get_args(Encoder)
"""The encoders ``models.encoder.open_encoder`` (and the config's ``visual.encoder``) accept."""

Metric = Literal["angular", "euclidean", "dot"]
METRICS: tuple[Metric, ...] = get_args(Metric)
"""Annoy's metrics: ``angular`` is cosine distance (blind to a vector's length), ``euclidean`` the talk's."""

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
"""The only formats Pillow may decode here, named when a file is opened: Pillow would otherwise try every
plugin it has, and its EPS, PS and PDF plugins run Ghostscript on the file, without a time limit."""
