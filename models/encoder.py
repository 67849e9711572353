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

Both share :class:`TorchEncoder`, which loads images, batches them, runs the
network on the GPU when there is one, and reports progress per batch. Torch
is imported here, so only code that encodes imports this module; the index
and the embeddings cache do not need torch.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models import ENCODERS, IMAGE_FORMATS

ImageSource = Union[str, os.PathLike, bytes, Image.Image]
"""A path to an image file, the file's bytes, or an already opened PIL image."""

Progress = Callable[[int, int], None]
"""Called after each batch with (images encoded so far, images in all)."""

MAX_SIDE = 1024
"""Pictures are shrunk to at most this many pixels on their longer side as they are decoded."""


class EncoderError(RuntimeError):
    """The encoder cannot be built: a missing package, missing weights or an unknown model; the message says what to do."""


class ImageError(ValueError):
    """An image cannot be read or decoded; the message names it."""


@runtime_checkable
class Encoder(Protocol):
    """Turns images into float32 feature vectors of a fixed size.

    ``model_id`` names the network, its weights and its preprocessing: two
    encoders with the same id give the same vectors, so the embeddings cache
    keys vectors by it.
    """

    model_id: str
    dim: int

    def encode_images(
        self, images: Sequence[ImageSource], batch_size: int = 32, progress: Progress | None = None
    ) -> np.ndarray:
        """One row of ``dim`` float32 values per image, in the order given."""
        ...


@runtime_checkable
class TextEncoder(Encoder, Protocol):
    """An encoder whose text vectors live in the same space as its image vectors (CLIP)."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """One row of ``dim`` float32 values per text."""
        ...


def default_device() -> str:
    """``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


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


class TorchEncoder:
    """The shared half of the PyTorch encoders: loading, batching, device and progress.

    A subclass sets ``model_id`` and ``dim`` and implements :meth:`preprocess`
    (one RGB image to a CHW float tensor) and :meth:`forward` (a batch to an
    ``(n, dim)`` tensor).
    """

    model_id: str
    dim: int
    device: str

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(
        self, images: Sequence[ImageSource], batch_size: int = 32, progress: Progress | None = None
    ) -> np.ndarray:
        """Encode ``images`` in batches of ``batch_size``; see :class:`Encoder`.

        Raises:
            ImageError: an image cannot be read (before any later batch is encoded).
        """
        if batch_size < 1:
            msg = f"batch_size must be at least 1, not {batch_size}"
            raise ValueError(msg)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for begin in range(0, len(images), batch_size):
            chunk = images[begin : begin + batch_size]
            tensors = [self.preprocess(load_image(image)) for image in chunk]
            with torch.inference_mode():
                vectors = self.forward(torch.stack(tensors).to(self.device))
            out[begin : begin + len(chunk)] = vectors.float().cpu().numpy()
            if progress is not None:
                progress(begin + len(chunk), len(images))
        return out


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
        from models.efficientnet import EfficientNetLite0

        return EfficientNetLite0(device=device)
    if name == "open_clip":
        from models.clip import OpenClipEncoder

        return OpenClipEncoder(model or "ViT-B-32", pretrained=pretrained, checkpoint=checkpoint, device=device)
    msg = f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})"
    raise EncoderError(msg)
