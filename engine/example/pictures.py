"""Product photos for the example shop: real Fashion-MNIST garments where installed, drawn shapes otherwise.

The visual recommender can only be shown on images that look like clothes.
Debian's ``dataset-fashion-mnist`` package holds Zalando's 70,000 labelled
28x28 greyscale product photos in ten classes (T-shirt, trouser, pullover,
dress, coat, sandal, shirt, sneaker, bag, ankle boot); when it is installed
(``apt-get install dataset-fashion-mnist``), each product of a matching
category gets a photo of its class. The four categories without a class
(skirt, scarf, hat, swimwear), and every category when the package is
missing, get a drawn silhouette of the garment with random proportions and
fabric texture instead.

Either way the garment is tinted with the product's catalogue colour on a
white background, as a shop photographs it, and written as a 112x112 PNG. The
choice of photo per product comes from its own random stream, so adding
images changes nothing else the generator makes.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package puts the files."""

FASHION_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
"""Fashion-MNIST's labels 0 to 9."""

# fmt: off
CATEGORY_CLASS: dict[str, int] = {
    "dress": 3, "jeans": 1, "shirt": 6, "t-shirt": 0, "sweater": 2, "jacket": 4, "coat": 4,
    "trousers": 1, "sneakers": 7, "boots": 9, "sandals": 5, "bag": 8,
}
"""The Fashion-MNIST class that photographs each shop category; the others are drawn."""

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (30, 30, 34), "white": (236, 236, 230), "navy": (28, 42, 92), "grey": (128, 128, 132),
    "red": (196, 30, 40), "blue": (40, 96, 200), "green": (40, 130, 70), "beige": (214, 190, 150),
    "pink": (236, 130, 170), "brown": (112, 70, 40), "yellow": (236, 200, 40), "purple": (112, 52, 140),
}
"""The catalogue's colour names as RGB."""
# fmt: on

SIZE = 112
"""Side of the written PNGs in pixels (Fashion-MNIST's 28 upscaled four times)."""


@dataclass(frozen=True)
class ImagePlan:
    """Which picture each product gets: a Fashion-MNIST index, or -1 for a drawn shape with its own seed."""

    product_ids: np.ndarray
    categories: np.ndarray
    colours: np.ndarray
    photo: np.ndarray  # index into the Fashion-MNIST train+test images, -1 for a drawing
    seeds: np.ndarray
    source: str  # what the output says about where the images come from

    def path(self, product_id: str) -> str:
        """The image's path relative to the shop folder, as the catalogue's ``image`` column holds it."""
        return f"images/{product_id}.png"


def fashion_mnist_installed(folder: Path = FASHION_MNIST) -> bool:
    """True when the four Fashion-MNIST files are there."""
    return all(
        (folder / f"{split}-{kind}-idx{dims}-ubyte.gz").is_file()
        for split in ("train", "t10k")
        for kind, dims in (("images", 3), ("labels", 1))
    )


def load_fashion_mnist(
    folder: Path = FASHION_MNIST, *, labels_only: bool = False
) -> tuple[np.ndarray | None, np.ndarray]:
    """Fashion-MNIST's 70,000 images (uint8, n x 28 x 28; train then test) and their labels.

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
        ValueError: a file is not in the IDX format.
    """
    if not fashion_mnist_installed(folder):
        msg = f"Fashion-MNIST is not in {folder}: apt-get install dataset-fashion-mnist"
        raise FileNotFoundError(msg)
    labels = np.concatenate([_idx(folder / f"{split}-labels-idx1-ubyte.gz", 2049) for split in ("train", "t10k")])
    if labels_only:
        return None, labels
    images = np.concatenate([_idx(folder / f"{split}-images-idx3-ubyte.gz", 2051) for split in ("train", "t10k")])
    return images, labels


def _idx(path: Path, magic: int) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    header = np.frombuffer(data[:4], dtype=">u4")[0]
    if header != magic:
        msg = f"{path}: not an IDX file (magic {header}, expected {magic})"
        raise ValueError(msg)
    dims = magic - 2048
    shape = tuple(int(d) for d in np.frombuffer(data[4 : 4 + 4 * dims], dtype=">u4"))
    return np.frombuffer(data[4 + 4 * dims :], dtype=np.uint8).reshape(shape)


def plan(
    product_ids: np.ndarray, categories: np.ndarray, colours: np.ndarray, seed: int, folder: Path = FASHION_MNIST
) -> ImagePlan:
    """Choose each product's picture: a distinct photo of its category's class where there is one (while they last)."""
    rng = np.random.default_rng([seed, 0x1A6E5])  # a stream of its own: the shop's other draws stay as they were
    photo = np.full(len(product_ids), -1, dtype=np.int64)
    seeds = rng.integers(2**31, size=len(product_ids))
    if fashion_mnist_installed(folder):
        _, labels = load_fashion_mnist(folder, labels_only=True)
        for category, label in CATEGORY_CLASS.items():
            members = np.flatnonzero(categories == category)
            pool = rng.permutation(np.flatnonzero(labels == label))
            photo[members] = pool[np.arange(members.size) % pool.size]
        drawn = sorted(set(categories[photo < 0]))
        source = f"Fashion-MNIST photos from {folder}" + (f"; drawn shapes for {', '.join(drawn)}" if drawn else "")
    else:
        source = "drawn shapes (for real garment photos: apt-get install dataset-fashion-mnist)"
    return ImagePlan(product_ids, categories, colours, photo, seeds, source)


def write(plan: ImagePlan, directory: Path, progress: Callable[[int], None] = lambda done: None) -> None:
    """Write every product's PNG under ``directory/images/``."""
    folder = directory / "images"
    folder.mkdir(parents=True, exist_ok=True)
    photos = load_fashion_mnist()[0] if (plan.photo >= 0).any() else None
    for i, product_id in enumerate(plan.product_ids):
        if plan.photo[i] >= 0:
            assert photos is not None  # loaded above when any product has a photo
            mask = Image.fromarray(photos[plan.photo[i]]).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        else:
            mask = draw(str(plan.categories[i]), np.random.default_rng(int(plan.seeds[i])))
        tint(mask, COLOUR_RGB.get(str(plan.colours[i]), (128, 128, 128))).save(directory / plan.path(str(product_id)))
        if (i + 1) % 500 == 0 or i + 1 == len(plan.product_ids):
            progress(i + 1)


def tint(mask: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """A greyscale garment (white on black, as Fashion-MNIST has it) in ``colour`` on white.

    The grey level is both coverage and shading: fully lit pixels get the
    colour, darker ones a shaded colour blended into the white background.
    """
    level = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    rgb = np.array(colour, dtype=np.float32)
    shaded = rgb * (0.55 + 0.45 * level)
    pixels = 255.0 * (1.0 - np.minimum(1.0, level * 1.6)) + shaded * np.minimum(1.0, level * 1.6)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def draw(category: str, rng: np.random.Generator) -> Image.Image:
    """A greyscale silhouette of a ``category`` garment with random proportions and texture (white on black)."""
    scale = SIZE / 28.0
    canvas = Image.new("L", (SIZE, SIZE), 0)
    pen = ImageDraw.Draw(canvas)
    j = lambda spread: float(rng.uniform(-spread, spread))  # noqa: E731 - a jitter, used a lot below
    for polygon in _SHAPES.get(category, _SHAPES["t-shirt"])(j):
        pen.polygon([(x * scale, y * scale) for x, y in polygon], fill=int(rng.integers(170, 256)))
    texture = rng.normal(0, 18, (SIZE, SIZE))
    pixels = np.asarray(canvas.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    pixels = np.where(pixels > 8, pixels + texture, pixels)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")


# Silhouettes on a 28x28 grid like Fashion-MNIST's; each takes a jitter function j(spread) -> offset.
Jitter = Callable[[float], float]


def _top(j: Jitter, sleeve: float, length: float, width: float) -> list[list[tuple[float, float]]]:
    w, bottom, s = width + j(1), length + j(1.5), sleeve + j(1)
    body = [(14 - w, 5), (14 + w, 5), (14 + w, bottom), (14 - w, bottom)]
    reach = 2 + s * 0.35  # sleeves hang out and down from the shoulder
    left = [
        (14 - w, 5),
        (14 - w - 1.5, 5.5),
        (14 - w - reach, 5 + s),
        (14 - w - reach + 3 + j(0.5), 6 + s),
        (14 - w, 10),
    ]
    right = [(28 - x, y) for x, y in left]
    return [body, left, right]


def _trousers(j: Jitter) -> list[list[tuple[float, float]]]:
    gap, flare = 0.6 + j(0.4), j(1.2)
    return [
        [(8 + j(0.5), 3), (20 + j(0.5), 3), (20 + flare, 26), (14 + gap, 26), (14, 9), (14 - gap, 26), (8 - flare, 26)]
    ]


def _dress(j: Jitter, length: float) -> list[list[tuple[float, float]]]:
    waist, hem = 3.5 + j(0.6), 8 + j(2)
    bottom = length + j(1.5)
    return [[(10.5, 3), (17.5, 3), (14 + waist, 11), (14 + hem, bottom), (14 - hem, bottom), (14 - waist, 11)]]


def _skirt(j: Jitter) -> list[list[tuple[float, float]]]:
    waist, hem, bottom = 5 + j(0.8), 9 + j(2), 19 + j(3)
    return [[(14 - waist, 7), (14 + waist, 7), (14 + hem, bottom), (14 - hem, bottom)]]


def _shoe(j: Jitter, shaft: float) -> list[list[tuple[float, float]]]:
    top, toe = 16 - shaft + j(1), 25 + j(1)
    return [[(4 + j(0.5), top), (12 + j(1), top), (13, 15 + j(1)), (toe, 17 + j(1)), (toe, 21), (4, 21)]]


def _sandal(j: Jitter) -> list[list[tuple[float, float]]]:
    sole = [(3, 19 + j(0.5)), (25 + j(1), 19), (25, 21.5), (3, 21.5)]
    straps = [[(x, 19), (x + 2.2, 13 + j(1.5)), (x + 3.6, 13 + j(1.5)), (x + 1.6, 19)] for x in (6 + j(1), 13 + j(1))]
    return [sole, *straps]


def _bag(j: Jitter) -> list[list[tuple[float, float]]]:
    w, top = 9 + j(2), 11 + j(2)
    body = [(14 - w, top), (14 + w, top), (14 + w + j(1), 25), (14 - w - j(1), 25)]
    handle = [
        (10, top),
        (11.5, top - 6 + j(1)),
        (16.5, top - 6 + j(1)),
        (18, top),
        (16.5, top),
        (15.5, top - 4),
        (12.5, top - 4),
        (11.5, top),
    ]
    return [body, handle]


def _scarf(j: Jitter) -> list[list[tuple[float, float]]]:
    w, tilt = 2.5 + j(0.8), j(5)
    band: list[tuple[float, float]] = [(14 - w + tilt, 2), (14 + w + tilt, 2), (14 + w - tilt, 26), (14 - w - tilt, 26)]
    fringe = [
        [(14 - w - tilt + k, 26), (14 - w - tilt + k + 0.6, 26), (14 - w - tilt + k + 0.3, 27.5)]
        for k in np.arange(0, 2 * w, 1.2)
    ]
    return [band, *fringe]


def _hat(j: Jitter) -> list[list[tuple[float, float]]]:
    brim, crown, height = 11 + j(2), 6 + j(1.5), 8 + j(2)
    return [
        [(14 - brim, 19), (14 + brim, 19), (14 + brim - 2, 21), (14 - brim + 2, 21)],
        [(14 - crown, 19), (14 - crown + 1, 19 - height), (14 + crown - 1, 19 - height), (14 + crown, 19)],
    ]


def _swimwear(j: Jitter) -> list[list[tuple[float, float]]]:
    cup, gap = 3.5 + j(0.8), 0.8 + j(0.4)
    top = [
        [(14 - gap - 2 * cup, 12), (14 - gap, 12), (14 - gap - cup, 6 + j(1))],
        [(14 + gap, 12), (14 + gap + 2 * cup, 12), (14 + gap + cup, 6 + j(1))],
    ]
    bottom = [(8 + j(1), 16), (20 + j(1), 16), (16, 23 + j(1)), (12, 23 + j(1))]
    return [*top, bottom]


_SHAPES: dict[str, Callable[[Jitter], list[list[tuple[float, float]]]]] = {
    "t-shirt": lambda j: _top(j, sleeve=3.5, length=23, width=6),
    "shirt": lambda j: _top(j, sleeve=15, length=24, width=5.5),
    "sweater": lambda j: _top(j, sleeve=16, length=22, width=7),
    "jacket": lambda j: _top(j, sleeve=17, length=22, width=7.5),
    "coat": lambda j: _top(j, sleeve=18, length=27, width=7.5),
    "dress": lambda j: _dress(j, length=26),
    "skirt": _skirt,
    "jeans": _trousers,
    "trousers": _trousers,
    "sneakers": lambda j: _shoe(j, shaft=1),
    "boots": lambda j: _shoe(j, shaft=9),
    "sandals": _sandal,
    "bag": _bag,
    "scarf": _scarf,
    "hat": _hat,
    "swimwear": _swimwear,
}
