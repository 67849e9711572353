"""The visual recommender's parts on real data: the packaged EfficientNet weights, the embeddings cache, Annoy."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from matplotlib import cbook
from PIL import Image

from engine import sqlfiles
from engine.example import pictures
from models import embeddings, index
from models.efficientnet import EfficientNetLite0
from models.encoder import Encoder, EncoderError, ImageError, load_image, open_encoder

GRACE_HOPPER = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
"""A photo every ImageNet model has been shown: Admiral Hopper in her navy uniform (ships with matplotlib)."""


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0:
    return EfficientNetLite0(device="cpu")


def labelled_images(per_class: int, classes: tuple[str, ...]) -> tuple[list[Image.Image], np.ndarray]:
    """Greyscale garments with their class: Fashion-MNIST photos when installed, drawn silhouettes otherwise."""
    if pictures.fashion_mnist_installed():
        photos, labels = pictures.load_fashion_mnist()
        images, classes_of = [], []
        for name in classes:
            label = pictures.CATEGORY_CLASS[name]
            for i in np.flatnonzero(labels == label)[:per_class]:
                images.append(Image.fromarray(photos[i]))
                classes_of.append(name)
        return images, np.array(classes_of)
    rng = np.random.default_rng(3)
    images = [pictures.draw(name, rng) for name in classes for _ in range(per_class)]
    return images, np.repeat(np.array(classes), per_class)


def cosine_top_k(vectors: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


# --- the encoder ---------------------------------------------------------------------------------------------------


def test_packaged_weights_are_real_imagenet_weights(encoder):
    """A randomly initialised or half-loaded network cannot put 'military uniform' on top for this photo."""
    batch = encoder.preprocess(load_image(GRACE_HOPPER)).unsqueeze(0)
    top5 = encoder.classify(batch)[0].topk(5).indices.tolist()
    assert top5[0] == 652  # ImageNet's "military uniform"
    assert {834, 906, 457} & set(top5)  # suit, Windsor tie, bow tie


@pytest.mark.slow
def test_vectors_are_pooled_1280_features_independent_of_batching(encoder):
    images = [GRACE_HOPPER] + labelled_images(3, ("dress",))[0]
    one_by_one = np.vstack([encoder.encode_images([image], batch_size=1) for image in images])
    batched = encoder.encode_images(images, batch_size=3)
    assert isinstance(encoder, Encoder)
    assert batched.shape == (4, 1280) and batched.dtype == np.float32
    assert (batched >= 0).all()  # averages of ReLU6 activations
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-4)
    assert not np.allclose(batched[0], batched[1])


@pytest.mark.slow
def test_progress_is_reported_per_batch(encoder):
    calls = []
    encoder.encode_images(
        labelled_images(5, ("bag",))[0], batch_size=2, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.slow
def test_same_class_neighbours_beat_other_classes(encoder):
    """Nearest neighbours by CNN features mostly share the garment's class (chance would be a quarter)."""
    classes = ("trousers", "sneakers", "bag", "dress")
    images, labels = labelled_images(12, classes)
    vectors = encoder.encode_images(images, batch_size=16)
    neighbours = cosine_top_k(vectors, 5)
    precision = (labels[neighbours] == labels[:, None]).mean()
    assert precision > 0.8, precision


def test_transparent_background_becomes_white(tmp_path):
    image = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (5, 2, 15, 8))
    image.save(tmp_path / "cutout.png")
    loaded = np.asarray(load_image(tmp_path / "cutout.png"))
    assert loaded.shape == (10, 20, 3)
    assert tuple(loaded[0, 0]) == (255, 255, 255)
    assert tuple(loaded[5, 10]) == (200, 0, 0)


def test_unreadable_images_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    for name, says in (
        ("missing.png", "does not exist"),
        ("notes.png", "cannot be read"),
        ("truncated.png", "cannot be read"),
    ):
        with pytest.raises(ImageError, match=f"{name}.*{says}"):
            load_image(tmp_path / name)
    with pytest.raises(ImageError, match=r"upload.*cannot be read"):
        load_image(b"\x89PNG\r\n\x1a\n garbage", name="upload")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    """PIL's bomb guard stays on: an image far over the pixel limit is an ImageError, not a memory blow-up."""
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the file has 4x the limit; PIL refuses above 2x
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(tmp_path / "big.png")


def test_unknown_encoder_and_misplaced_options():
    with pytest.raises(EncoderError, match="unknown encoder 'resnet'"):
        open_encoder("resnet")
    with pytest.raises(EncoderError, match="takes no model"):
        open_encoder("efficientnet-lite0", checkpoint="weights.bin")


# --- the embeddings cache ------------------------------------------------------------------------------------------


class CountingEncoder(EfficientNetLite0):
    """The real encoder, counting the images it is asked to encode."""

    def __init__(self, model_id: str | None = None) -> None:
        super().__init__(device="cpu")
        self.model_id = model_id or self.model_id
        self.encoded: list[str] = []

    def encode_batches(self, images, batch_size=32, **options):
        self.encoded += [Path(image).name for image in images]
        return super().encode_batches(images, batch_size, **options)


@pytest.fixture(scope="module")
def counting() -> CountingEncoder:
    return CountingEncoder()


def write_images(folder: Path, names: dict[str, str]) -> list[Path]:
    """Write a drawn garment per file name (the value names the category; a same value gives different drawings)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, category in names.items():
        mask = pictures.draw(category, np.random.default_rng(hash(name) % 2**32))
        pictures.tint(mask, (40, 96, 200)).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.mark.slow
def test_cache_encodes_only_new_or_changed_images(counting, tmp_path):
    connection = duckdb.connect()
    paths = write_images(tmp_path, {"a.png": "dress", "b.png": "bag", "c.png": "hat"})
    counting.encoded.clear()
    first, present, stats = embeddings.vectors_for(connection, counting, paths)
    assert sorted(counting.encoded) == ["a.png", "b.png", "c.png"]
    assert (stats.encoded, stats.cached, present.all()) == (3, 0, True)

    counting.encoded.clear()
    again, _, stats = embeddings.vectors_for(connection, counting, paths)
    assert counting.encoded == [] and stats.cached == 3
    np.testing.assert_array_equal(again, first)

    # b changes, d is new, e is a byte-for-byte copy of a under another name: only b and d are encoded.
    write_images(tmp_path, {"b.png": "boots", "d.png": "scarf"})
    (tmp_path / "e.png").write_bytes((tmp_path / "a.png").read_bytes())
    counting.encoded.clear()
    later, _, stats = embeddings.vectors_for(connection, counting, [*paths, tmp_path / "d.png", tmp_path / "e.png"])
    assert sorted(counting.encoded) == ["b.png", "d.png"]
    assert (stats.images, stats.distinct, stats.cached, stats.encoded) == (5, 4, 2, 2)
    np.testing.assert_array_equal(later[0], first[0])
    np.testing.assert_array_equal(later[4], first[0])
    assert not np.allclose(later[1], first[1])
    np.testing.assert_allclose(later[1], counting.encode_images([tmp_path / "b.png"])[0], rtol=1e-4, atol=1e-5)
    # b's old vector stays: the cache is keyed by content, and a photo changed back costs nothing.
    assert connection.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 5


@pytest.mark.slow
def test_another_model_never_reuses_vectors(counting, tmp_path):
    connection = duckdb.connect()
    paths = write_images(tmp_path, {"a.png": "dress", "b.png": "bag"})
    embeddings.vectors_for(connection, counting, paths)
    other = CountingEncoder(model_id="efficientnet-lite0:other-preprocessing")
    embeddings.vectors_for(connection, other, paths)
    assert sorted(other.encoded) == ["a.png", "b.png"]
    assert connection.execute("SELECT count(DISTINCT model_id), count(*) FROM embeddings").fetchone() == (2, 4)


def test_cache_lives_in_a_warehouse_file_and_survives_reopening(counting, tmp_path):
    paths = write_images(tmp_path / "images", {"a.png": "coat"})
    with duckdb.connect(str(tmp_path / "cache.duckdb")) as connection:
        first, _, _ = embeddings.vectors_for(connection, counting, paths)
    counting.encoded.clear()
    with duckdb.connect(str(tmp_path / "cache.duckdb")) as connection:
        again, _, stats = embeddings.vectors_for(connection, counting, paths)
        assert connection.execute("SELECT typeof(vector) FROM embeddings").fetchone()[0] == "FLOAT[]"
    assert counting.encoded == [] and stats.cached == 1
    np.testing.assert_array_equal(again, first)


def test_a_stored_vector_of_the_wrong_length_is_an_error(counting, tmp_path):
    connection = duckdb.connect()
    paths = write_images(tmp_path, {"a.png": "dress"})
    embeddings.store(connection, counting.model_id, [embeddings.file_sha256(paths[0])], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"vectors of length 3 .* which makes 1280"):
        embeddings.vectors_for(connection, counting, paths)


def test_unreadable_images_stop_the_encoding_or_are_skipped(counting, tmp_path):
    connection = duckdb.connect()
    paths = write_images(tmp_path, {"a.png": "dress", "b.png": "bag"})
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    files = [paths[0], tmp_path / "broken.png", tmp_path / "gone.png", paths[1]]
    with pytest.raises(ImageError, match=r"gone\.png: image file does not exist"):
        embeddings.vectors_for(connection, counting, files)
    with pytest.raises(ImageError, match=r"broken\.png: cannot be read"):
        embeddings.vectors_for(connection, counting, [paths[0], tmp_path / "broken.png", paths[1]], batch_size=1)
    # The batch encoded before the failure is in the cache: the next run does not encode it again.
    assert connection.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 1
    vectors, present, stats = embeddings.vectors_for(connection, counting, files, skip_unreadable=True)
    assert present.tolist() == [True, False, False, True]
    assert len(stats.skipped) == 2 and all(name in " ".join(stats.skipped) for name in ("broken.png", "gone.png"))
    assert not vectors[1].any() and vectors[3].any()


# --- the Annoy index -----------------------------------------------------------------------------------------------


def clustered(rows: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    return centres[rng.integers(clusters, size=rows)] + 0.6 * rng.standard_normal((rows, dim)).astype(np.float32)


def keys(tenant_products: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"tenant": [t for t, _ in tenant_products], "product_id": [p for _, p in tenant_products]})


@pytest.mark.parametrize("metric", ["angular", "euclidean", "dot"])
def test_annoy_finds_what_brute_force_finds(metric):
    vectors = clustered(2_000, 64, 40)
    built = index.build(
        keys([("nl", f"{i:05d}") for i in range(2_000)]), vectors, model_id="test", metric=metric, n_trees=20
    )
    if metric == "angular":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        score = unit @ unit.T
    elif metric == "euclidean":
        squared = (vectors**2).sum(axis=1)
        score = -np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0))
    else:
        score = vectors @ vectors.T
    np.fill_diagonal(score, -np.inf)
    exact = np.argsort(-score, axis=1)[:, :10]
    queries = range(0, 2_000, 10)
    found = [{int(n.product_id) for n in built.similar("nl", f"{q:05d}", 10, search_k=2_000)} for q in queries]
    recall = np.mean([len(f & set(exact[q].tolist())) / 10 for f, q in zip(found, queries, strict=True)])
    assert recall >= 0.9, recall
    # Scores are higher-is-closer and match the metric's own value for the best neighbour.
    first = built.similar("nl", "00000", 3, search_k=2_000)
    assert first[0].score >= first[1].score >= first[2].score
    best = int(first[0].product_id)
    assert first[0].score == pytest.approx(
        score[0, best] if metric != "euclidean" else 1 / (1 - score[0, best]), rel=1e-4
    )


def test_saved_index_is_memory_mapped_and_answers_alike(tmp_path):
    vectors = clustered(500, 32, 10)
    built = index.build(keys([("nl", f"p{i}") for i in range(500)]), vectors, model_id="test", n_trees=10)
    built.save(tmp_path / "snapshot")
    assert sorted(p.name for p in (tmp_path / "snapshot").iterdir()) == [
        "visual-items.arrow",
        "visual-nl.ann",
        "visual.json",
    ]
    loaded = index.VisualIndex.load(tmp_path / "snapshot")
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "snapshot" / "visual-nl.ann") in maps
    assert str(tmp_path / "snapshot" / "visual-items.arrow") in maps
    for product in ("p0", "p17", "p499"):
        assert loaded.similar("nl", product, 10) == built.similar("nl", product, 10)
    np.testing.assert_allclose(loaded.vector("nl", "p17"), vectors[17], rtol=1e-6)
    assert loaded.nearest("nl", vectors[17], 1)[0].product_id == "p17"
    loaded.unload()


@pytest.mark.parametrize("metric", ["angular", "euclidean"])
def test_reduced_search_reranks_exactly_and_survives_saving(metric, tmp_path):
    """Forests over 16 principal components, re-ranked on the full 64-d vectors: near brute force, exact scores."""
    vectors = clustered(2_000, 64, 40, seed=2) + 3.0  # an offset, as non-negative CNN features have
    table = keys([("nl", f"{i:05d}") for i in range(2_000)])
    built = index.build(
        table, vectors, model_id="test", metric=metric, n_trees=20, dims=16, candidates=50, search_k=3_000
    )
    base = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if metric == "angular" else vectors
    squared = (base**2).sum(axis=1)
    distance = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * base @ base.T, 0))
    np.fill_diagonal(distance, np.inf)
    exact = np.argsort(distance, axis=1)[:, :10]
    queries = range(0, 2_000, 20)
    recall = np.mean(
        [
            len({int(n.product_id) for n in built.similar("nl", f"{q:05d}", 10)} & set(exact[q].tolist())) / 10
            for q in queries
        ]
    )
    assert recall >= 0.9, recall
    best = built.similar("nl", "00007", 1)[0]
    expected = (
        1 - distance[7, int(best.product_id)] ** 2 / 2
        if metric == "angular"
        else 1 / (1 + distance[7, int(best.product_id)])
    )
    assert best.score == pytest.approx(expected, rel=1e-4)

    built.save(tmp_path)
    assert {"visual-vectors.npy", "visual-projection.npy"} <= {p.name for p in tmp_path.iterdir()}
    loaded = index.VisualIndex.load(tmp_path)
    assert str(tmp_path / "visual-vectors.npy") in Path("/proc/self/maps").read_text()
    assert loaded.similar("nl", "00007", 10) == built.similar("nl", "00007", 10)
    assert loaded.nearest("nl", vectors[7], 1)[0].product_id == "00007"
    assert index.itemitem_rows(loaded, 5).equals(index.itemitem_rows(built, 5))


def test_reduced_search_needs_fewer_dimensions_and_a_distance():
    table = keys([("nl", f"{i}") for i in range(10)])
    vectors = np.random.default_rng(0).random((10, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="dims must be between 1 and 7"):
        index.build(table, vectors, model_id="test", dims=8)
    with pytest.raises(ValueError, match="needs the angular or euclidean metric"):
        index.build(table, vectors, model_id="test", metric="dot", dims=4)


def test_visual_rows_never_cross_tenants():
    """The same product ids in two shops with different photos: each shop's lists name only its own products."""
    rng = np.random.default_rng(5)
    nl = [("nl", f"{i:03d}") for i in range(60)]
    be = [("be", f"{i:03d}") for i in range(30, 80)]  # 30..59 sold in both
    vectors = rng.standard_normal((len(nl) + len(be), 16)).astype(np.float32)
    built = index.build(keys(nl + be), vectors, model_id="test", n_trees=10)
    rows = index.itemitem_rows(built, top_n=5)
    assert rows.schema == index.ITEMITEM_SCHEMA
    assert index.itemitem_rows(built, top_n=5, threads=1).equals(rows)  # threads change nothing but the time
    assert index.itemitem_rows(built, top_n=5, threads=7).equals(rows)
    sold = {"nl": {p for _, p in nl}, "be": {p for _, p in be}}
    listed = rows.to_pylist()
    assert len(listed) == 5 * (len(nl) + len(be))
    for row in listed:
        assert row["related_product_id"] in sold[row["tenant"]]
        assert row["related_product_id"] != row["product_id"]
        assert row["algorithm"] == "visual" and row["cooccurrence"] is None and row["product_sessions"] is None
    # Product 040 is in both shops; its lists differ and come from each shop's own catalogue.
    assert built.similar("nl", "040", 5) != built.similar("be", "040", 5)
    ranks = {}
    for row in listed:
        ranks.setdefault((row["tenant"], row["product_id"]), []).append(row["rank"])
    assert all(r == [1, 2, 3, 4, 5] for r in ranks.values())
    ordered = [(r["tenant"], r["product_id"], r["rank"]) for r in listed]
    assert ordered == sorted(ordered)
    with pytest.raises(index.NotIndexed, match="product '070' of tenant 'nl'"):
        built.similar("nl", "070")
    with pytest.raises(index.NotIndexed, match="tenant 'de' has no visual index"):
        built.nearest("de", vectors[0])


def test_the_same_input_builds_the_same_rows():
    vectors = clustered(300, 16, 8, seed=1)
    table = keys([("nl", f"p{i:03d}") for i in range(300)])
    first = index.itemitem_rows(index.build(table, vectors, model_id="test", n_trees=5), top_n=10)
    # Rows given in another order make the same forest: the index sorts by (tenant, product_id) first.
    order = np.random.default_rng(0).permutation(300)
    second = index.itemitem_rows(index.build(table.take(order), vectors[order], model_id="test", n_trees=5), top_n=10)
    assert first.equals(second)


def test_bad_index_input_is_refused():
    table = keys([("nl", "a"), ("nl", "b")])
    good = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match="metric must be one of"):
        index.build(table, good, model_id="test", metric="manhattan")
    with pytest.raises(ValueError, match=r"2 keys need a \(2, dim\) matrix"):
        index.build(table, np.ones((3, 4)), model_id="test")
    with pytest.raises(ValueError, match="NaN"):
        index.build(table, np.full((2, 4), np.nan), model_id="test")
    with pytest.raises(ValueError, match="product 'a' appears more than once for tenant 'nl'"):
        index.build(keys([("nl", "a"), ("nl", "a")]), good, model_id="test")
    with pytest.raises(ValueError, match="cannot name a file"):
        index.build(keys([("../x", "a"), ("../x", "b")]), good, model_id="test")
    built = index.build(table, good, model_id="test", n_trees=1)
    with pytest.raises(ValueError, match="a vector of 3 values was given, the index holds 4-dimensional"):
        built.nearest("nl", np.ones(3))


def test_loading_an_incomplete_index_names_the_missing_file(tmp_path):
    built = index.build(keys([("nl", "a"), ("be", "a")]), np.eye(2, 4, dtype=np.float32), model_id="test", n_trees=1)
    built.save(tmp_path)
    (tmp_path / "visual-be.ann").unlink()
    with pytest.raises(index.NotIndexed, match=r"visual-be\.ann is missing"):
        index.VisualIndex.load(tmp_path)
    with pytest.raises(index.NotIndexed, match="holds no visual index"):
        index.VisualIndex.load(tmp_path / "elsewhere")


# --- the cold-start blend ------------------------------------------------------------------------------------------


def test_blend_uses_clicks_where_they_suffice_and_looks_elsewhere():
    connection = duckdb.connect()
    rows = [
        # warm product w (10 sessions): two llr neighbours, topped up by visual ones not already listed.
        ("llr", "w", 1, "x", 9.0),
        ("llr", "w", 2, "y", 5.0),
        ("visual", "w", 1, "y", 0.9),
        ("visual", "w", 2, "z", 0.8),
        ("visual", "w", 3, "v", 0.7),
        # cold product c (1 session): its llr list is ignored, the visual list is used.
        ("llr", "c", 1, "x", 3.0),
        ("visual", "c", 1, "z", 0.95),
        ("visual", "c", 2, "w", 0.5),
        # never viewed product n: visual only.
        ("visual", "n", 1, "w", 0.4),
    ]
    connection.execute(
        "CREATE TABLE itemitem (tenant VARCHAR, algorithm VARCHAR, product_id VARCHAR, rank INTEGER, "
        "related_product_id VARCHAR, distance_score DOUBLE, cooccurrence BIGINT, product_sessions BIGINT, "
        "related_sessions BIGINT)"
    )
    connection.executemany("INSERT INTO itemitem VALUES ('nl', ?, ?, ?, ?, ?, NULL, NULL, NULL)", rows)
    connection.execute(
        "CREATE TABLE item_counts AS SELECT * FROM (VALUES ('nl', 'w', 10), ('nl', 'c', 1)) t(tenant, product_id, sessions)"
    )
    sqlfiles.create_table(connection, "visual_blend", {"min_sessions": 3, "top_n": 3})
    got = connection.execute("SELECT product_id, rank, related_product_id, distance_score FROM visual_blend").fetchall()
    assert got == [
        ("c", 1, "z", 0.95),
        ("c", 2, "w", 0.5),
        ("n", 1, "w", 0.4),
        ("w", 1, "x", 9.0),
        ("w", 2, "y", 5.0),
        ("w", 3, "z", 0.8),
    ]
    assert {r[0] for r in connection.execute("SELECT DISTINCT algorithm FROM visual_blend").fetchall()} == {
        "visual_blend"
    }


# --- open_clip (only where the clip extra is installed) ------------------------------------------------------------


def _needs_open_clip():
    try:
        import open_clip  # noqa: F401
    except ImportError:
        pytest.skip("open_clip is not installed (the clip extra: pip install -e '.[clip]' pytest scipy)")


def test_clip_without_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    _needs_open_clip()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(EncoderError, match=r"not in the local caches.*visual\.checkpoint"):
        open_encoder("open_clip", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(EncoderError, match=r"has no weights: set visual\.pretrained"):
        open_encoder("open_clip", model="ViT-B-32")
    with pytest.raises(EncoderError, match=r"checkpoint .*nothing\.bin does not exist"):
        open_encoder("open_clip", model="ViT-B-32", checkpoint=tmp_path / "nothing.bin")
    with pytest.raises(EncoderError, match="no model 'ViT-Q-99'"):
        open_encoder("open_clip", model="ViT-Q-99", pretrained="x")


def test_clip_from_a_local_checkpoint_encodes_images_and_text(tmp_path):
    """Weights from a local file load and give normalised image and text vectors of one width.

    The checkpoint is a freshly initialised model saved to disk (no real CLIP
    weights can be downloaded here), so this checks the loading and the
    shapes, not the quality.
    """
    _needs_open_clip()
    import open_clip as oc
    import torch

    model = oc.create_model("ViT-S-32", pretrained=None)
    torch.save(model.state_dict(), tmp_path / "vit-s-32.pt")
    encoder = open_encoder("open_clip", model="ViT-S-32", checkpoint=tmp_path / "vit-s-32.pt", device="cpu")
    images = encoder.encode_images([GRACE_HOPPER, GRACE_HOPPER], batch_size=2)
    texts = encoder.encode_text(["red summer dress", "navy uniform"])
    assert images.shape == (2, encoder.dim) and texts.shape == (2, encoder.dim) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, rtol=1e-4)
    digest = embeddings.file_sha256(tmp_path / "vit-s-32.pt")[:8]
    assert encoder.model_id == f"open_clip:ViT-S-32:vit-s-32.pt-{digest}:pad-white"
    # The pipelined path (bfloat16 where native) against the plain one through open_clip's own transform, float32.
    from models.clip import OpenClipEncoder

    plain = OpenClipEncoder("ViT-S-32", checkpoint=tmp_path / "vit-s-32.pt", device="cpu", precision="float32")
    pictures_ = [GRACE_HOPPER, *labelled_images(3, ("dress",))[0]]
    reference = plain.reference_vectors(pictures_)
    vectors = encoder.encode_images(pictures_, batch_size=2)
    assert (
        (reference * vectors).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(vectors, axis=1)
    ).min() >= 0.995
