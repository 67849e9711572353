"""The example shop's product photos, and the visual stage run on them end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from engine.example import generator, pictures
from models import visual
from models.efficientnet import EfficientNetLite0
from tests.conftest import SMALL_SHOP

TINY = generator.ShopSpec(products=160, brands=20, events=2_000, days=3, seed=5)


def test_every_catalogue_product_has_its_picture(small_shop):
    catalogue = pq.read_table(small_shop / "catalogue.parquet")
    paths = set(catalogue.column("image").to_pylist())
    assert len(paths) == len(
        set(catalogue.column("product_id").to_pylist())
    )  # one picture per product, shared by tenants
    for path in sorted(paths)[:50]:
        with Image.open(small_shop / path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (pictures.SIZE,) * 2)
    assert len(list((small_shop / "images").glob("*.png"))) == len(paths)


def test_pictures_are_deterministic_and_leave_the_rest_of_the_shop_alone(tmp_path):
    shop = generator.generate(TINY)
    for folder in ("one", "two"):
        generator.write_shop(shop, tmp_path / folder, ("parquet",))
    digest = lambda folder: hashlib.sha256(  # noqa: E731
        b"".join((tmp_path / folder / "images" / f"{p}.png").read_bytes() for p in sorted(shop.images.product_ids))
    ).hexdigest()
    assert digest("one") == digest("two")
    again = generator.generate(TINY)
    assert again.events.equals(shop.events)
    # The pictures draw from their own random stream: the catalogue's other columns do not depend on them.
    assert again.catalogue.drop_columns(["image"]).equals(shop.catalogue.drop_columns(["image"]))


@pytest.mark.skipif(not pictures.fashion_mnist_installed(), reason="dataset-fashion-mnist is not installed")
def test_categories_get_photos_of_their_fashion_mnist_class():
    shop = generator.generate(SMALL_SHOP)
    plan = shop.images
    _, labels = pictures.load_fashion_mnist(labels_only=True)
    for category, label in pictures.CATEGORY_CLASS.items():
        photos = plan.photo[plan.categories == category]
        assert (photos >= 0).all() and (labels[photos] == label).all(), category
        assert len(set(photos.tolist())) == photos.size  # distinct photos while the class has enough
    assert (plan.photo[np.isin(plan.categories, ["skirt", "scarf", "hat", "swimwear"])] == -1).all()
    assert plan.source.startswith("Fashion-MNIST photos from /usr/share/datasets/fashion-mnist; drawn shapes for")


def test_without_fashion_mnist_every_picture_is_drawn(tmp_path):
    names = np.array(list(generator.CATEGORIES))
    plan = pictures.plan(
        np.array([f"{i:07d}" for i in range(16)]), names, np.array(["red"] * 16), seed=1, folder=tmp_path / "no-dataset"
    )
    assert (plan.photo == -1).all()
    assert plan.source.startswith("drawn shapes (for real garment photos: apt-get install dataset-fashion-mnist)")
    pictures.write(plan, tmp_path)
    pixels = np.asarray(Image.open(tmp_path / plan.path("0000000")))
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # white background
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80)
    assert red.mean() > 0.05  # a red garment in the middle


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        pictures.load_fashion_mnist(tmp_path)


@pytest.mark.slow
def test_visual_stage_on_the_example_pictures_finds_the_same_kind_of_garment(tmp_path):
    """Encode a tiny shop's pictures, index them per tenant, and check the lists look right.

    Pictures of one category are mostly each other's neighbours (16
    categories, so chance is about 1 in 16), every list stays in its tenant,
    and a second run encodes nothing.
    """
    shop = generator.generate(TINY)
    generator.write_shop(shop, tmp_path, ("parquet",))
    catalogue = pq.read_table(tmp_path / "catalogue.parquet")
    connection = duckdb.connect()
    encoder = EfficientNetLite0(device="cpu")
    result = visual.run(connection, catalogue, tmp_path, encoder, n_trees=10, top_n=5)
    products = catalogue.num_rows
    assert result.rows.num_rows == 5 * products
    assert result.stats.encoded == result.stats.distinct == TINY.products

    category = {(r["tenant"], r["product_id"]): r["category"] for r in catalogue.to_pylist()}
    rows = result.rows.to_pylist()
    assert all((r["tenant"], r["related_product_id"]) in category for r in rows)
    same = np.mean(
        [category[(r["tenant"], r["product_id"])] == category[(r["tenant"], r["related_product_id"])] for r in rows]
    )
    assert same > 0.5, same

    again = visual.run(connection, catalogue, tmp_path, encoder, n_trees=10, top_n=5)
    assert (again.stats.encoded, again.stats.cached) == (0, TINY.products)
    assert again.rows.equals(result.rows)


def test_a_catalogue_without_pictures_is_refused(small_shop):
    catalogue = pq.read_table(small_shop / "catalogue.parquet").drop_columns(["image"])
    with pytest.raises(ValueError, match="no `image` column"):
        visual.catalogue_images(catalogue, small_shop)


def test_products_without_a_picture_are_left_out(small_shop):
    catalogue = pq.read_table(small_shop / "catalogue.parquet").slice(0, 4)
    image = catalogue.column("image").to_pylist()
    catalogue = catalogue.set_column(
        catalogue.column_names.index("image"), "image", [[image[0], None, "  ", str(Path("/abs") / "x.png")]]
    )
    keys, paths = visual.catalogue_images(catalogue, small_shop)
    assert keys.column("product_id").to_pylist() == pc.take(catalogue.column("product_id"), [0, 3]).to_pylist()
    assert paths == [small_shop / image[0], Path("/abs/x.png")]
