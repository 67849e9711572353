"""The shared half of the PyTorch encoders: pictures on disk to vectors, with the input path running beside the network.

Encoding used to wait on one Python thread: open a file, decode it, pad it
to a square, resize it, and only then hand a batch to the network. On one
H200 that kept the GPU busy 0.7% of the time, and on two CPU cores the
network waited for the decoding as well. Here a torch ``DataLoader``'s worker
processes read and decode the next batches while the main process runs the
network on this one:

* on a CPU, each worker decodes a picture with PIL
  (:func:`~models.encoder.load_image`), pads it with white to a square and
  resizes it with PyTorch's vectorised uint8 filter (:func:`pad_and_resize`);
* on a GPU, the workers only read the bytes of the JPEGs that nvJPEG decodes
  (baseline, RGB or greyscale: :func:`nvjpeg_decodes`) and the main process
  decodes the whole batch of them on the device
  (``torchvision.io.decode_jpeg``), then pads and resizes each group of one
  size in one call there; the workers decode every other picture (PNG, WebP,
  GIF, CMYK or progressive JPEG) as on a CPU. A JPEG that nvJPEG refuses
  after all is decoded on the CPU, that picture alone.

Both keep the semantics of the plain path (:meth:`TorchEncoder.reference_vectors`,
what encoding did before): transparent parts white, the picture centred on
a white square and resized with the network's filter. The network runs in
bfloat16 where the device computes it natively (see the encoders for which
layers stay in float32). Vectors stay within a cosine of 0.995 of the plain
path's (``tests/test_encode_paths.py`` checks it), so the model id, and the
embeddings cache, do not depend on the path.

A picture that cannot be read is named in the batch's ``errors`` and the
rest of its batch is encoded. A GPU out of memory splits the batch in
halves until they fit, and later batches are cut to the size that fitted.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from models.encoder import EncodedBatch, ImageError, ImageSource, Progress, load_image

Precision = Literal["float32", "bfloat16"]

WHITE = (255, 255, 255)

DEVICE_DECODE_MAX_PIXELS = 4096 * 4096
"""Larger JPEGs are decoded by the workers (which shrink them to ``MAX_SIDE`` as they decode) rather than whole on
the GPU, where a batch of them would take gigabytes."""

DEVICE_SQUARE_PIXELS = 1 << 26
"""The padded squares resized on the device in one call hold at most this many pixels (768 MB as float32)."""


def default_device() -> str:
    """``cuda`` when PyTorch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 at full speed: a GPU from Ampere on, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bfloat16 is emulated and slower than float32, so the encoders stay in float32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        # torch.cpu's feature probes are private but are what PyTorch's own bfloat16 tests use.
        return torch.backends.mkldnn.is_available() and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    return False


@dataclass(frozen=True)
class InputSpec:
    """What a network takes: ``size`` x ``size`` RGB, resized with ``interpolation``, scaled to 0..1, then ``(x - mean) / std``."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"

    @property
    def resample(self) -> Image.Resampling:
        """PIL's filter for ``interpolation``."""
        return Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR


# --- one picture, on the CPU -------------------------------------------------------------------------------------


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """``image`` centred on a square canvas of ``fill`` as wide as its longer side (the plain path's first step)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def pad_and_resize(pictures: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``(n, 3, h, w)`` uint8 pictures of one size, padded with white to a square and resized to ``spec.size``.

    The plain path's geometry exactly (a picture centred on its square, then
    filtered as a whole): a shift of less than a pixel moved a photo's vector
    to a cosine of 0.99. Give uint8 on a CPU, where PyTorch's uint8 kernel is
    vectorised (nine times PIL's speed on an 800 x 800 square), and floats on
    a GPU, whose kernel takes only floats; the result has the same type,
    channels-last, and PIL's pixels to a level or two in 255.
    """
    count, _, height, width = pictures.shape
    side = max(height, width)
    square = torch.empty(
        (count, 3, side, side), dtype=pictures.dtype, device=pictures.device, memory_format=torch.channels_last
    ).fill_(255)  # made channels-last, not converted to it: a conversion of uint8 costs more than the resizing
    top, left = (side - height) // 2, (side - width) // 2
    square[:, :, top : top + height, left : left + width] = pictures
    resize = functools.partial(F.interpolate, mode=spec.interpolation, antialias=True)
    if square.dtype == torch.uint8:
        return resize(square, size=(spec.size, spec.size))
    # PIL (and the uint8 kernel) filter the rows, then the columns, clipping and rounding in between; a float kernel
    # would carry the overshoot at sharp edges into the second pass and end up to 8 levels away. So: two passes.
    rows = resize(square, size=(side, spec.size)).clamp_(0, 255).round_()
    return resize(rows, size=(spec.size, spec.size)).clamp_(0, 255)


def pixels(image: Image.Image) -> torch.Tensor:
    """An RGB PIL picture as a ``(3, h, w)`` uint8 tensor (a channels-last view)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def nvjpeg_decodes(data: bytes) -> bool:
    """Whether to give this file to nvJPEG, judged from its header: a baseline RGB or greyscale JPEG, not huge.

    CMYK and progressive JPEGs, and every other format, are decoded on the CPU.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (
                image.format == "JPEG"
                and image.mode in ("RGB", "L")
                and not image.info.get("progressive")
                and image.width * image.height <= DEVICE_DECODE_MAX_PIXELS
            )
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False  # the CPU decode names the problem


# --- the worker processes ----------------------------------------------------------------------------------------


def _label(source: ImageSource, index: int) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"image {index}"


class _Pictures(Dataset):
    """What a worker does with one picture: its white square of pixels, or its JPEG bytes for the GPU, or its error."""

    def __init__(self, images: Sequence[ImageSource], spec: InputSpec, jpeg_bytes: bool) -> None:
        self.images, self.spec, self.jpeg_bytes = images, spec, jpeg_bytes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | bytes | ImageError]:
        source, label = self.images[index], _label(self.images[index], index)
        try:
            if self.jpeg_bytes and isinstance(source, (str, os.PathLike, bytes)):
                data = source if isinstance(source, bytes) else _read(source)
                if data is not None and nvjpeg_decodes(data):
                    return index, data
                source = source if data is None else data  # unreadable: load_image names the problem
            square = pad_and_resize(pixels(load_image(source, label))[None], self.spec)[0]
            return index, square.permute(1, 2, 0)  # (size, size, 3): channels-last, so no copy
        except ImageError as error:
            return index, error


def _read(path: str | os.PathLike) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


@dataclass
class _Batch:
    """A batch as the workers hand it over: few, large tensors, which cross between processes in shared memory."""

    indices: list[int]  # of the squares, then of the JPEGs
    squares: torch.Tensor  # (n, size, size, 3) uint8
    jpegs: torch.Tensor  # the JPEG files' bytes, one after the other
    jpeg_lengths: list[int]
    errors: list[tuple[int, ImageError]]

    def pin_memory(self) -> _Batch:
        """Page-locked copies, so that the copies to the GPU overlap its work (the DataLoader's ``pin_memory``)."""
        self.squares, self.jpegs = self.squares.pin_memory(), self.jpegs.pin_memory()
        return self


def _collate(items: list[tuple[int, torch.Tensor | bytes | ImageError]], size: int) -> _Batch:
    squares = [(index, item) for index, item in items if isinstance(item, torch.Tensor)]
    jpegs = [(index, item) for index, item in items if isinstance(item, bytes)]
    stacked = (
        torch.stack([item for _, item in squares]) if squares else torch.empty((0, size, size, 3), dtype=torch.uint8)
    )
    data = np.frombuffer(b"".join(item for _, item in jpegs), np.uint8).copy()
    return _Batch(
        indices=[index for index, _ in squares + jpegs],
        squares=stacked,
        jpegs=torch.from_numpy(data),
        jpeg_lengths=[len(item) for _, item in jpegs],
        errors=[(index, item) for index, item in items if isinstance(item, ImageError)],
    )


# --- the device stage --------------------------------------------------------------------------------------------


class _Encoded(NamedTuple):
    """What one pass through the device gave: the rows' indices, their vectors (on the device), and the errors."""

    indices: list[int]
    vectors: torch.Tensor
    errors: list[tuple[int, ImageError]]


class _Work(NamedTuple):
    """Pictures for one pass through the device: squares first, then JPEGs, in the order of ``indices``."""

    indices: list[int]
    squares: torch.Tensor
    jpegs: list[torch.Tensor]

    def part(self, begin: int, end: int) -> _Work:
        done = len(self.squares)
        return _Work(
            self.indices[begin:end], self.squares[begin:end], self.jpegs[max(begin - done, 0) : max(end - done, 0)]
        )


@functools.cache
def _torchvision_decode_jpeg() -> Callable | None:
    """torchvision's ``decode_jpeg`` (nvJPEG on a GPU), or None without torchvision.

    Imported on first use: it costs a second, and only a GPU run needs it.
    PyPI's torchvision beside a torch it was not built for fails with a
    RuntimeError rather than an ImportError.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError):
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def _decode_jpegs(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode a batch of JPEGs on ``device``: ``(3, h, w)`` uint8 each, None where nvJPEG refused one."""
    decode_jpeg = _torchvision_decode_jpeg()
    if decode_jpeg is None or not jpegs:
        return [None] * len(jpegs)
    try:
        return list(decode_jpeg(jpegs, device=device))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:  # one picture spoils the batch call: find it
        decoded: list[torch.Tensor | None] = []
        for data in jpegs:
            try:
                decoded.append(decode_jpeg(data, device=device))
            except torch.OutOfMemoryError:
                raise
            except RuntimeError:
                decoded.append(None)
        return decoded


# --- the encoder -------------------------------------------------------------------------------------------------


class TorchEncoder:
    """The shared half of the PyTorch encoders: the input path, batching, device, precision and progress.

    A subclass sets ``model_id``, ``dim``, ``device``, ``precision`` and
    ``input`` (an :class:`InputSpec`) and implements :meth:`preprocess` (one
    RGB picture to a CHW float tensor, the plain path's preprocessing) and
    :meth:`forward` (a normalised batch to an ``(n, dim)`` tensor).
    """

    model_id: str
    dim: int
    device: torch.device
    precision: Precision
    input: InputSpec

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(
        self, images: Sequence[ImageSource], batch_size: int = 32, progress: Progress | None = None
    ) -> np.ndarray:
        """One row of ``dim`` float32 values per image, in the order given.

        Raises:
            ImageError: an image cannot be read (its batch's other pictures were encoded, no later batch is).
        """
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with closing(self.encode_batches(images, batch_size)) as batches:
            for batch in batches:
                if batch.errors:
                    raise batch.errors[0]
                out[batch.indices] = batch.vectors
                if progress is not None:
                    progress(batch.done, len(images))
        return out

    def encode_batches(
        self,
        images: Sequence[ImageSource],
        batch_size: int = 32,
        *,
        workers: int | None = None,
        decode_on_device: bool | None = None,
    ) -> Generator[EncodedBatch, None, None]:
        """Encode ``images`` batch by batch, in order, while the next batches are read and decoded.

        Args:
            images: paths, file contents or PIL images.
            batch_size: pictures per batch (a GPU out of memory cuts it).
            workers: decoding processes; by default a quarter of the cores on a
                CPU (the network needs the rest) and all but one beside a GPU.
                None are started for a single batch (an upload to the server).
            decode_on_device: give baseline JPEGs to the device to decode, pad
                and resize (by default on a GPU with torchvision). Without
                torchvision the main process decodes them one by one, as it does
                a JPEG that nvJPEG refuses; the tests use that on a CPU.
        """
        if batch_size < 1:
            msg = f"batch_size must be at least 1, not {batch_size}"
            raise ValueError(msg)
        if decode_on_device is None:
            decode_on_device = self.device.type == "cuda" and _torchvision_decode_jpeg() is not None
        if workers is None:
            cores = len(os.sched_getaffinity(0))
            workers = max(1, cores - 1) if self.device.type == "cuda" else max(1, cores // 4)
        loader = DataLoader(
            _Pictures(images, self.input, decode_on_device),
            batch_size=batch_size,
            num_workers=workers if len(images) > batch_size else 0,
            collate_fn=functools.partial(_collate, size=self.input.size),
            pin_memory=self.device.type == "cuda",
        )
        split = _Splitter(functools.partial(self._device_stage, labels=lambda index: _label(images[index], index)))
        batches, done, previous = iter(loader), 0, None
        while True:
            try:
                batch = next(batches, None)
                if batch is not None:
                    jpegs = list(torch.split(batch.jpegs, batch.jpeg_lengths)) if batch.jpeg_lengths else []
                    encoded = split(_Work(batch.indices, batch.squares, jpegs))
                    done += len(batch.indices) + len(batch.errors)
                    errors = sorted(batch.errors + encoded.errors, key=lambda pair: pair[0])
                    current = _InFlight.start(encoded.indices, encoded.vectors, errors, done)
            except BaseException:  # an OOM no split cures, an interrupt: hand over the batch before, then stop
                if previous is not None:
                    yield previous.finish()
                raise
            if previous is not None:
                yield previous.finish()  # the device works on the next batch meanwhile
            if batch is None:
                return
            previous = current

    def reference_vectors(self, images: Sequence[ImageSource], batch_size: int = 32) -> np.ndarray:
        """The plain path, as encoding was before the pipelined one: the check and the baseline for the pipelined path.

        One thread decodes each picture (:func:`~models.encoder.load_image`),
        pads it to a square and resizes it with PIL (:meth:`preprocess`); then
        the network runs on the batch. Used by the tests and
        ``tests/bench/bench_encode.py``, not by a build.

        Raises:
            ImageError: an image cannot be read.
        """
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for begin in range(0, len(images), batch_size):
            chunk = images[begin : begin + batch_size]
            tensors = [self.preprocess(load_image(image)) for image in chunk]
            with torch.inference_mode():
                vectors = self.forward(torch.stack(tensors).to(self.device))
            out[begin : begin + len(chunk)] = vectors.float().cpu().numpy()
        return out

    def _device_stage(self, work: _Work, labels: Callable[[int], str]) -> _Encoded:
        """Decode, pad, resize and normalise ``work`` on the device and run the network: rows' indices, vectors, errors."""
        device = self.device
        parts = [work.squares.to(device, non_blocking=True).permute(0, 3, 1, 2).float()]
        indices = list(work.indices[: len(work.squares)])
        groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        errors: list[tuple[int, ImageError]] = []
        jpeg_indices = work.indices[len(work.squares) :]
        for index, data, image in zip(jpeg_indices, work.jpegs, _decode_jpegs(work.jpegs, device), strict=True):
            if image is None:  # no nvJPEG, or it refused this one: the CPU decodes it, this picture alone
                try:
                    image = pixels(load_image(data.numpy().tobytes(), labels(index))).to(device)
                except ImageError as error:
                    errors.append((index, error))
                    continue
            groups.setdefault((image.shape[1], image.shape[2]), []).append((index, image))
        for (height, width), members in groups.items():
            step = max(1, DEVICE_SQUARE_PIXELS // max(height, width) ** 2)
            for begin in range(0, len(members), step):
                chunk = members[begin : begin + step]
                stack = torch.stack([image for _, image in chunk])
                parts.append(pad_and_resize(stack if device.type == "cpu" else stack.float(), self.input).float())
                indices += [index for index, _ in chunk]
        batch = torch.cat(parts).contiguous(memory_format=torch.channels_last)
        mean = torch.tensor(self.input.mean, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.input.std, device=device).view(1, 3, 1, 1) * 255
        with torch.inference_mode():
            vectors = self.forward(batch.sub_(mean).div_(std)) if indices else torch.empty((0, self.dim), device=device)
        return _Encoded(indices, vectors.float(), errors)


class _Splitter:
    """Runs the device stage, halving a batch after an out-of-memory error until the halves fit.

    Later batches are then cut to the largest size that fitted, so one OOM
    does not repeat on every batch. A single picture that does not fit is
    an error that stops the encoding; what was encoded before it has been
    handed over (the embeddings cache keeps it).
    """

    def __init__(self, stage: Callable[[_Work], _Encoded]) -> None:
        self.stage = stage
        self.fits: int | None = None  # the largest batch that fitted after an out-of-memory error

    def __call__(self, work: _Work) -> _Encoded:
        parts = self._run(work)
        return _Encoded(
            [index for part in parts for index in part.indices],
            torch.cat([part.vectors for part in parts]),
            [error for part in parts for error in part.errors],
        )

    def _run(self, work: _Work) -> list[_Encoded]:
        count, step = len(work.indices), self.fits
        if step is not None and count > step:
            return [part for begin in range(0, count, step) for part in self._run(work.part(begin, begin + step))]
        try:
            return [self.stage(work)]
        except torch.OutOfMemoryError:
            if count <= 1:
                raise
        # Out of the except block, so that the failed attempt's tensors are freed before the retry.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.fits = count // 2
        return self._run(work)


@dataclass
class _InFlight:
    """A batch's vectors on their way from the device to memory, copied while the device starts the next batch."""

    indices: list[int]
    vectors: torch.Tensor
    errors: list[tuple[int, ImageError]]
    done: int
    ready: torch.cuda.Event | None

    @classmethod
    def start(
        cls, indices: list[int], vectors: torch.Tensor, errors: list[tuple[int, ImageError]], done: int
    ) -> _InFlight:
        on_gpu = vectors.device.type == "cuda"
        copy = vectors.to("cpu", non_blocking=on_gpu)
        ready = torch.cuda.Event() if on_gpu else None
        if ready is not None:
            ready.record()
        return cls(indices, copy, errors, done, ready)

    def finish(self) -> EncodedBatch:
        if self.ready is not None:
            self.ready.synchronize()
        return EncodedBatch(
            indices=np.array(self.indices, dtype=np.int64),
            vectors=self.vectors.numpy(),
            errors=[error for _, error in self.errors],
            done=self.done,
        )
