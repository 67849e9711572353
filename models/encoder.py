"""One interface for the image encoders: product photos in, one feature vector per photo out.

The talk's visual recommender needs no metadata: a convolutional network
trained on ImageNet turns each photo into a vector, and photos whose vectors
are close look alike. Two backends implement :class:`Encoder`:

* :class:`models.efficientnet.EfficientNetLite0` (the default): ImageNet
  weights that ship inside a registry package, so a fresh machine encodes
  with no download;
* :class:`models.clip.OpenClipEncoder`: any open_clip model with weights
  from a local file or the local Hugging Face cache; it also encodes text, so
  "red summer dress" finds photos.

Both share :class:`models.torch_encoder.TorchEncoder`, the input path that
reads and decodes pictures beside the network, on the GPU when there is
one. This module does not import torch: the embeddings cache and the server's
upload checks use it without loading PyTorch.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image, UnidentifiedImageError

from models import ENCODERS, IMAGE_FORMATS

ImageSource = str | os.PathLike | bytes | Image.Image
"""A path to an image file, the file's bytes, or an already opened PIL image."""

Progress = Callable[[int, int], None]
"""Called after each batch with (images encoded so far, images in all)."""

MAX_SIDE = 1024
"""Pictures are shrunk to at most this many pixels on their longer side as they are decoded."""


class EncoderError(RuntimeError):
    """The encoder cannot be built: a missing package, missing weights or an unknown model; the message says what to do."""


class ImageError(ValueError):
    """An image cannot be read or decoded; the message names it."""


@dataclass
class EncodedBatch:
    """One batch of :meth:`Encoder.encode_batches`: the vectors of the pictures it could read, and the others' errors."""

    indices: np.ndarray
    """Positions, in the images given, of the rows of ``vectors`` (int64)."""
    vectors: np.ndarray
    """float32, one row of ``dim`` per index."""
    errors: list[ImageError]
    """The pictures of this batch that could not be read, each named in its message; the rest were encoded."""
    done: int
    """Pictures handled so far, this batch included, encoded or not: for progress."""


@runtime_checkable
class Encoder(Protocol):
    """Turns images into float32 feature vectors of a fixed size.

    ``model_id`` names the network, its weights and its preprocessing: two
    encoders with the same id give the same vectors (to a cosine of 0.995,
    whatever the device, precision or input path), so the embeddings cache
    keys vectors by it.
    """

    model_id: str
    dim: int

    def encode_images(
        self, images: Sequence[ImageSource], batch_size: int = 32, progress: Progress | None = None
    ) -> np.ndarray:
        """One row of ``dim`` float32 values per image, in the order given; the first unreadable image raises ImageError."""
        ...

    def encode_batches(
        self, images: Sequence[ImageSource], batch_size: int = 32
    ) -> Generator[EncodedBatch, None, None]:
        """The vectors batch by batch, in order, with each batch's unreadable pictures named rather than raised.

        A generator, so that a caller that stops early can close it (``contextlib.closing``).
        """
        ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """An encoder whose text vectors live in the same space as its image vectors (CLIP)."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """One row of ``dim`` float32 values per text."""
        ...


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Open and fully decode ``source`` as an RGB image; transparent parts become white.

    Product photos often come as PNGs with a transparent background, which
    would turn black in a plain RGB conversion and make every such photo look
    alike. Decoding happens here, not lazily, so a truncated file fails with
    its name rather than deep inside a batch. A picture longer than
    :data:`MAX_SIDE` on either side is shrunk to fit it (keeping its shape)
    before anything else: the encoders look at 224 pixels, and padding a
    20000 x 1 strip to a square would otherwise take gigabytes. PIL's
    decompression-bomb limit stays on: an image with far more pixels than it
    claims to need is refused.

    Raises:
        ImageError: the file is missing, not an image, truncated, or a decompression bomb.
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "image")
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            handle = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
            image = Image.open(handle, formats=IMAGE_FORMATS)
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG decodes straight at a fraction of its size; others ignore it
        image.load()
    except FileNotFoundError:
        msg = f"{label}: image file does not exist"
        raise ImageError(msg) from None
    except Image.DecompressionBombError as error:
        msg = f"{label}: refused as a possible decompression bomb ({error})"
        raise ImageError(msg) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        msg = f"{label}: cannot be read as an image ({error})"
        raise ImageError(msg) from None
    if max(image.size) > MAX_SIDE:
        image = image.copy() if image is source else image
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def open_encoder(
    name: str = "efficientnet-lite0",
    *,
    model: str | None = None,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | None = None,
) -> Encoder:
    """Build the encoder the config's ``[visual]`` table names.

    Args:
        name: ``efficientnet-lite0`` or ``open_clip``.
        model: the open_clip model name (``ViT-B-32``, ``hf-hub:org/repo``, ...); open_clip only.
        pretrained: an open_clip pretrained tag (``laion2b_s34b_b79k``) found in the local caches.
        checkpoint: a local open_clip weights file; wins over ``pretrained``.
        device: ``cuda`` or ``cpu``; by default the GPU when there is one.

    Raises:
        EncoderError: unknown name, missing package or missing weights.
    """
    if name == "efficientnet-lite0":
        if model or pretrained or checkpoint:
            msg = "the efficientnet-lite0 encoder takes no model, pretrained or checkpoint (its weights ship in a package)"
            raise EncoderError(msg)
        try:
            from models.efficientnet import EfficientNetLite0
        except ImportError as error:
            msg = f"the efficientnet-lite0 encoder needs PyTorch, in the visual extra: pip install -e '.[visual]' ({error})"
            raise EncoderError(msg) from None
        return EfficientNetLite0(device=device)
    if name == "open_clip":
        try:
            from models.clip import OpenClipEncoder
        except ImportError as error:
            msg = f"the open_clip encoder needs PyTorch, in the clip extra: pip install -e '.[clip]' ({error})"
            raise EncoderError(msg) from None
        return OpenClipEncoder(model or "ViT-B-32", pretrained=pretrained, checkpoint=checkpoint, device=device)
    msg = f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})"
    raise EncoderError(msg)
