"""Benchmark of the visual recommender: feature quality, and Annoy against exact search.

    .venv/bin/python tests/bench/bench_visual.py [quality] [annoy]

* quality: precision@10 of same-class neighbours on labelled Fashion-MNIST
  photos (the test split's first 200 of each class), by EfficientNet-Lite0
  features and, in the same run, by raw pixels (cosine and Euclidean);
* annoy: 180,000 random-but-clustered 1280-d vectors (see :func:`clustered`),
  exact top-10 by brute force for 1,000 held-out queries, then per forest
  (trees; full vectors, or principal components with exact re-ranking, with
  or without the neighbour graph) the build time and the saved index's size,
  and per search_k the recall@10 and queries/s on one core (the faster of two
  passes), through ``VisualIndex.nearest`` on the memory-mapped
  files as the server queries it; first, the recall an exact search over the
  principal components would reach (:func:`reduced_bound`), which tells the
  projection's loss from the forest's.

The encoder's speed is ``tests/bench/bench_encode.py``'s. Prints a Markdown
table per part; nothing here is collected by pytest.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.example import pictures
from models import index
from models.reduce import fit, unit

BENCH_DATA = Path(__file__).resolve().parents[2] / "bench-data"
ROWS = 180_000
DIM = 1280
QUERIES = 1_000


def precision_at_k(vectors: np.ndarray, labels: np.ndarray, k: int = 10, metric: str = "cosine") -> float:
    """Share of each vector's exact k nearest neighbours (itself excluded) that have its label."""
    if metric == "cosine":
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        score = unit @ unit.T
    else:
        squared = (vectors**2).sum(axis=1)
        score = -(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T)
    np.fill_diagonal(score, -np.inf)
    top = np.argpartition(-score, k, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def quality() -> None:
    if not pictures.fashion_mnist_installed():
        print("quality: skipped, dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
        return
    features, classes, speed = encoded_fashion_mnist()
    photos, labels = pictures.load_fashion_mnist()
    test = np.arange(60_000, 70_000)
    chosen = np.concatenate([test[labels[test] == c][:200] for c in range(10)])
    pixels = photos[chosen].reshape(len(chosen), -1).astype(np.float32)
    assert (labels[chosen] == classes).all()
    print(f"\n### Same-class precision@10 on {len(classes):,} Fashion-MNIST test photos (10 classes, chance 0.10)\n")
    print("| vectors | dimensions | metric | precision@10 |\n|---|---|---|---|")
    for name, vectors in (("EfficientNet-Lite0 pooled features", features), ("raw pixels", pixels)):
        for metric in ("cosine", "euclidean"):
            print(f"| {name} | {vectors.shape[1]} | {metric} | {precision_at_k(vectors, classes, metric=metric):.3f} |")
    if speed == speed:
        print(f"\n(encoding ran at {speed:.1f} images/s)")
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    score = unit @ unit.T
    np.fill_diagonal(score, -np.inf)
    top = np.argpartition(-score, 10, axis=1)[:, :10]
    same = labels[chosen][top] == classes[:, None]
    print(
        "\nper class (features, cosine): "
        + ", ".join(f"{name} {same[classes == c].mean():.2f}" for c, name in enumerate(pictures.FASHION_CLASSES))
    )


def encoded_fashion_mnist(per_class: int = 200) -> tuple[np.ndarray, np.ndarray, float]:
    """EfficientNet-Lite0 features of the Fashion-MNIST test split's first ``per_class`` photos of each class.

    Cached in ``bench-data/`` (encoding takes minutes on a CPU). Returns the
    features, their labels, and the images/s of the encoding (NaN when cached).
    """
    from PIL import Image

    from models.efficientnet import EfficientNetLite0

    cache = BENCH_DATA / f"fashion-mnist-lite0-{per_class}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["features"], saved["labels"], float("nan")
    photos, labels = pictures.load_fashion_mnist()
    test = np.arange(60_000, 70_000)
    chosen = np.concatenate([test[labels[test] == c][:per_class] for c in range(10)])
    encoder = EfficientNetLite0()
    begin = time.perf_counter()
    features = encoder.encode_images([Image.fromarray(photos[i]) for i in chosen], batch_size=64)
    speed = len(chosen) / (time.perf_counter() - begin)
    BENCH_DATA.mkdir(exist_ok=True)
    np.savez(cache, features=features, labels=labels[chosen])
    return features, labels[chosen], speed


def clustered(
    rows: int, spectrum_of: np.ndarray, clusters: int = 2_000, between: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Random vectors with the geometry of real encoder features, grouped in clusters of Zipf-like sizes.

    I.i.d. Gaussian vectors in 1280 dimensions are a poor stand-in: every
    point is almost equally far from every other, which no index (and no
    recommendation) can use. These copy what matters from real features
    (``spectrum_of``, unit-normalised EfficientNet vectors of photos): their
    mean and the variance along each principal axis, so they have the real
    features' low intrinsic dimension. ``between`` of each axis's variance
    separates the cluster centres, the rest spreads points around them.
    """
    rng = np.random.default_rng(seed)
    unit = spectrum_of / np.linalg.norm(spectrum_of, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    _, singular, axes = np.linalg.svd(unit - mean, full_matrices=False)
    scale = (singular / np.sqrt(len(unit))).astype(np.float32)  # standard deviation along each axis
    axes = axes.astype(np.float32)
    centres = rng.standard_normal((clusters, scale.size)).astype(np.float32) * scale * np.sqrt(between)
    weight = 1.0 / np.arange(1, clusters + 1) ** 0.7
    member = rng.choice(clusters, size=rows, p=weight / weight.sum())
    out = np.empty((rows, unit.shape[1]), dtype=np.float32)
    for begin in range(0, rows, 20_000):
        part = member[begin : begin + 20_000]
        spread = rng.standard_normal((part.size, scale.size)).astype(np.float32) * scale * np.sqrt(1 - between)
        out[begin : begin + part.size] = mean + (centres[part] + spread) @ axes
    return out


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Brute-force cosine top-k of each query over ``data``, in blocks to bound memory."""
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = np.empty((len(q), k), dtype=np.int64)
    for begin in range(0, len(q), 100):
        score = q[begin : begin + 100] @ unit.T
        top = np.argpartition(-score, k, axis=1)[:, :k]
        order = np.take_along_axis(score, top, axis=1).argsort(axis=1)[:, ::-1]
        out[begin : begin + 100] = np.take_along_axis(top, order, axis=1)
    return out


def reduced_bound(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, dims: int, candidates: int) -> float:
    """Recall@10 of an exact search over ``dims`` principal components, re-ranking its best ``candidates`` on the full vectors.

    The best any forest over those components can do with that many
    candidates: what it misses below this, the trees missed.
    """
    full = unit(data)
    projection = fit(full, dims, 42)
    reduced, asked = projection(full), projection(unit(queries))
    hits = []
    for query, wanted, vector in zip(asked, truth.tolist(), unit(queries), strict=True):
        nearest = np.argpartition(((reduced - query) ** 2).sum(axis=1), candidates)[:candidates]
        top = nearest[np.argsort(-(full[nearest] @ vector))[:10]]
        hits.append(len(set(top.tolist()) & set(wanted)) / 10)
    return float(np.mean(hits))


FORESTS = (
    (10, None, 0),
    (50, None, 0),
    (100, None, 0),
    (50, 128, 0),
    (100, 64, 0),
    (50, 128, 32),
    (50, 64, 32),
    (20, 128, 32),
)
"""(n_trees, dims, neighbours) to build: full 1280-d forests; forests over principal components with exact
re-ranking; and those with a neighbour graph that each query walks from the forest's results."""
SEARCH_K = (-1, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000)
SEARCH_K_WALKED = (-1, 200, 500, 1_000, 2_000)
"""With a graph the forest only has to land near the answer: larger search_k buys little, so fewer are tried."""


def annoy(forests: tuple = FORESTS, search: tuple[int, ...] = SEARCH_K, candidates: int = 100) -> None:
    features, _, _ = encoded_fashion_mnist()
    begin = time.perf_counter()
    vectors = clustered(ROWS + QUERIES, features)
    data, queries = vectors[:ROWS], vectors[ROWS:]
    made = time.perf_counter() - begin
    begin = time.perf_counter()
    truth = exact_top_k(data, queries)
    brute = time.perf_counter() - begin
    print(
        f"\n### Annoy against brute force: {ROWS:,} clustered {DIM}-d vectors, {QUERIES:,} held-out queries, angular\n"
    )
    print(
        f"(vectors made in {made:.1f} s; exact top-10 by NumPy brute force: {brute:.1f} s, "
        f"{QUERIES / brute:,.0f} queries/s on {os.cpu_count()} cores)\n"
    )
    print("| dims | candidates | recall@10 of exact search over the components, re-ranked |\n|---|---|---|")
    for dims, kept in ((64, 100), (64, 300), (128, 100), (128, 200)):
        print(f"| {dims} | {kept} | {reduced_bound(data, queries[:300], truth[:300], dims, kept):.3f} |", flush=True)
    print()
    print("| n_trees | dims | graph | build s | index MB | search_k | recall@10 | queries/s (1 core) | ms/query |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = pa.table({"tenant": ["nl"] * ROWS, "product_id": [f"{i:07d}" for i in range(ROWS)]})
    with tempfile.TemporaryDirectory(prefix="bench-annoy-") as folder:
        for n_trees, dims, neighbours in forests:
            begin = time.perf_counter()
            built = index.build(
                keys, data, model_id="bench", n_trees=n_trees, dims=dims, candidates=candidates, neighbours=neighbours
            )
            build_seconds = time.perf_counter() - begin
            saved = built.save(Path(folder) / f"{n_trees}-{dims}-{neighbours}")
            megabytes = sum(p.stat().st_size for p in saved.iterdir()) / 2**20
            built.unload()
            loaded = index.VisualIndex.load(saved)  # queries go to the memory-mapped files, as in the server
            for search_k in search if not neighbours else [k for k in search if k in SEARCH_K_WALKED]:
                seconds = float("inf")
                for _ in range(2):  # the faster of two passes: the first also faults the files into memory
                    begin = time.perf_counter()
                    found = [
                        [int(n.product_id) for n in loaded.nearest("nl", q, 10, search_k=search_k)] for q in queries
                    ]
                    seconds = min(seconds, time.perf_counter() - begin)
                recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist(), strict=True)])
                print(
                    f"| {n_trees} | {dims or DIM} | {neighbours or '-'} | {build_seconds:.1f} | {megabytes:,.0f} | {search_k} | {recall:.3f} | "
                    f"{QUERIES / seconds:,.0f} | {1000 * seconds / QUERIES:.2f} |",
                    flush=True,
                )
            loaded.unload()
            del built, loaded


if __name__ == "__main__":
    parts = sys.argv[1:] or ["quality", "annoy"]
    for part in parts:
        {"quality": quality, "annoy": annoy}[part]()
