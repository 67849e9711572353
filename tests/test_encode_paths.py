"""The pipelined input path against the plain one, on real pictures in every format a shop uploads.

The plain path (``TorchEncoder.reference_vectors``) is how encoding worked
before: PIL decodes, pads and resizes one picture at a time and the network
runs in float32. Its vectors are the reference here, computed in each test,
not stored. The pipelined path must stay within a cosine of 0.995 of them
(the bound docs/visual.md states; the model id, and so the embeddings cache,
do not change with the path), on the CPU workers' route and on the device
route, which runs here on the CPU with PIL in nvJPEG's place where
torchvision is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from matplotlib import cbook
from PIL import Image

from engine.example import pictures
from models import embeddings
from models.efficientnet import EfficientNetLite0
from models.encoder import MAX_SIDE, ImageError
from models.torch_encoder import InputSpec, nvjpeg_decodes, pad_and_resize, pad_to_square, pixels

GRACE_HOPPER = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
"""A real 512 x 600 photo, with detail up to its edges (ships with matplotlib)."""

BOUND = 0.995
"""The cosine the pipelined path keeps to the plain one, as documented."""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def plain() -> EfficientNetLite0:
    return EfficientNetLite0(device="cpu", precision="float32")


@pytest.fixture(scope="module")
def fast() -> EfficientNetLite0:
    """The build's encoder: bfloat16 where this CPU has it natively, else float32."""
    return EfficientNetLite0(device="cpu")


@pytest.fixture(scope="module")
def shop_pictures(tmp_path_factory) -> dict[str, Path]:
    """The formats and shapes a shop uploads, from a real photo and the example shop's garments."""
    folder = tmp_path_factory.mktemp("formats")
    photo = Image.open(GRACE_HOPPER).convert("RGB")
    garment = pictures.tint(pictures.draw("dress", np.random.default_rng(1)), (196, 30, 40))
    cutout = garment.convert("RGBA")
    cutout.putalpha(Image.fromarray(((np.asarray(garment.convert("L")) < 250) * 255).astype(np.uint8)))
    made = {
        "photo.jpg": lambda path: shutil.copy(GRACE_HOPPER, path),
        "grey.jpg": lambda path: photo.convert("L").save(path, quality=90),
        "progressive.jpg": lambda path: photo.save(path, quality=90, progressive=True),
        "cmyk.jpg": lambda path: photo.convert("CMYK").save(path, quality=90),
        "wide.jpg": lambda path: photo.resize((900, 300)).save(path, quality=90),
        "large.jpg": lambda path: photo.resize((2 * MAX_SIDE + 48, 2 * MAX_SIDE)).save(path, quality=90),
        "garment.png": lambda path: garment.save(path),
        "cutout.png": lambda path: cutout.save(path),
        "garment.webp": lambda path: garment.save(path, quality=90),
        "photo.webp": lambda path: photo.save(path, quality=90),
        "garment.gif": lambda path: garment.convert("P", palette=Image.Palette.ADAPTIVE).save(path),
        "tall.png": lambda path: photo.resize((150, 500)).save(path),
    }
    for name, write in made.items():
        write(folder / name)
    return {name: folder / name for name in made}


@pytest.mark.slow
def test_pipelined_vectors_are_the_plain_paths(shop_pictures, plain, fast):
    """Every format, through the worker processes in batches, against the plain path picture by picture."""
    files = list(shop_pictures.values())
    reference = plain.reference_vectors(files)
    exact = plain.encode_images(files, batch_size=5)  # float32: only the input path differs
    assert cosines(exact, reference).min() > 0.9999, dict(zip(shop_pictures, cosines(exact, reference), strict=True))
    vectors = fast.encode_images(files, batch_size=5)
    assert cosines(vectors, reference).min() >= BOUND, dict(
        zip(shop_pictures, cosines(vectors, reference), strict=True)
    )
    in_process = np.concatenate([batch.vectors for batch in fast.encode_batches(files, batch_size=5, workers=0)])
    np.testing.assert_allclose(in_process, vectors, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_device_route_gives_the_same_vectors(shop_pictures, plain, fast):
    """JPEGs decoded whole, padded and resized in batches on the device (here the CPU), every other format by workers."""
    files = list(shop_pictures.values())
    reference = plain.reference_vectors(files)
    batches = list(fast.encode_batches(files, batch_size=5, decode_on_device=True))
    assert [batch.done for batch in batches] == [5, 10, 12] and not any(batch.errors for batch in batches)
    order = np.concatenate([batch.indices for batch in batches])
    vectors = np.concatenate([batch.vectors for batch in batches])
    assert sorted(order) == list(range(len(files)))
    assert cosines(vectors, reference[order]).min() >= BOUND


def test_nvjpeg_gets_only_the_jpegs_it_decodes(shop_pictures, tmp_path):
    takes = {name for name, path in shop_pictures.items() if nvjpeg_decodes(path.read_bytes())}
    assert takes == {"photo.jpg", "grey.jpg", "wide.jpg", "large.jpg"}  # not CMYK, progressive, PNG, WebP, GIF
    assert not nvjpeg_decodes(b"not a picture") and not nvjpeg_decodes(GRACE_HOPPER.read_bytes()[:100])


@pytest.mark.parametrize("shape", [(600, 512), (300, 900), (112, 112), (500, 150), (40, 90)])
def test_padding_and_resizing_match_pils_pixels(shape):
    """The uint8 kernel (a CPU's) and the float one (a GPU's) both give PIL's pixels, to two levels in 255."""
    height, width = shape
    photo = Image.open(GRACE_HOPPER).convert("RGB").resize((width, height))
    spec = InputSpec(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    expected = np.asarray(pad_to_square(photo).resize((224, 224), Image.Resampling.BICUBIC), dtype=np.int16)
    for tensor in (pixels(photo)[None], pixels(photo)[None].float()):
        resized = pad_and_resize(tensor, spec)[0].round().to(torch.int16).permute(1, 2, 0).numpy()
        assert resized.shape == expected.shape and np.abs(resized - expected).max() <= 2


def test_an_unreadable_picture_is_named_and_the_rest_of_its_batch_encoded(shop_pictures, plain, fast, tmp_path):
    whole = shop_pictures["photo.jpg"].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # a whole header: nvJPEG would be asked
    (tmp_path / "notes.jpg").write_text("not a picture")
    good = [shop_pictures[name] for name in ("photo.jpg", "cutout.png", "progressive.jpg")]
    files = [good[0], tmp_path / "truncated.jpg", good[1], tmp_path / "notes.jpg", good[2], tmp_path / "gone.jpg"]
    reference = plain.reference_vectors(good)
    for on_device in (False, True):
        (batch,) = fast.encode_batches(files, batch_size=6, decode_on_device=on_device)
        assert sorted(batch.indices.tolist()) == [0, 2, 4] and batch.done == 6
        found = dict(zip(batch.indices.tolist(), batch.vectors, strict=True))
        assert cosines(np.array([found[0], found[2], found[4]]), reference).min() >= BOUND
        messages = sorted(str(error) for error in batch.errors)
        assert len(messages) == 3
        assert "gone.jpg: image file does not exist" in messages[0]
        assert "notes.jpg: cannot be read as an image" in messages[1]
        assert "truncated.jpg: cannot be read as an image" in messages[2]
    with pytest.raises(ImageError, match=r"truncated\.jpg: cannot be read"):
        fast.encode_images(files, batch_size=6)


class OutOfMemoryEncoder(EfficientNetLite0):
    """The real encoder, whose forward raises PyTorch's out-of-memory error as a full GPU would.

    It runs out above ``fits`` pictures at once, or for any batch once
    ``budget`` pictures have been encoded (another job took the memory).
    """

    def __init__(self, fits: int = 1_000, budget: int = 1_000) -> None:
        super().__init__(device="cpu")
        self.fits, self.budget, self.sizes = fits, budget, []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(batch))
        if len(batch) > self.fits or self.budget < len(batch):
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        self.budget -= len(batch)
        return super().forward(batch)


@pytest.mark.slow
def test_out_of_memory_splits_the_batch_and_later_batches_start_at_the_size_that_fitted(shop_pictures, fast):
    files = list(shop_pictures.values())[:10]
    encoder = OutOfMemoryEncoder(fits=3)
    vectors = encoder.encode_images(files, batch_size=8)
    assert encoder.sizes == [8, 4, 2, 2, 2, 2, 2]  # 8 and 4 fail; then halves of 2, and the last batch at 2
    assert cosines(vectors, fast.encode_images(files, batch_size=8)).min() > 0.9999


@pytest.mark.slow
def test_an_out_of_memory_no_split_cures_keeps_what_was_encoded(shop_pictures):
    files = list(shop_pictures.values())[:6]
    encoder = OutOfMemoryEncoder(budget=4)
    connection = duckdb.connect()
    with pytest.raises(torch.OutOfMemoryError):
        embeddings.vectors_for(connection, encoder, files, batch_size=2)
    assert connection.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 4
    encoder.budget = 1_000
    _, present, stats = embeddings.vectors_for(connection, encoder, files, batch_size=2)
    assert present.all() and (stats.cached, stats.encoded) == (4, 2)
