"""The neighbour graph that finishes the Annoy search: NN-descent rounds, the walk, and the index files it adds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from models import graph, index


def exact_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    squared = (vectors**2).sum(axis=1)
    distance = squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T
    np.fill_diagonal(distance, np.inf)
    return np.argsort(distance, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth, strict=True)])
    )


def clustered(rows: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * 3
    return centres[rng.integers(clusters, size=rows)] + rng.standard_normal((rows, dim)).astype(np.float32)


def test_an_exact_first_guess_stays_exact():
    vectors = clustered(600, 8, 6)
    truth = exact_neighbours(vectors, 10)
    built = graph.build(vectors, lambda item: [item, *truth[item].tolist()], m=10, rounds=2)
    assert built.dtype == np.int32 and built.shape == (600, 10)
    np.testing.assert_array_equal(built, truth)


def test_nn_descent_repairs_a_random_first_guess():
    """Random neighbours to start from: the rounds find the true ones, each round at least as well as the one before."""
    vectors = clustered(2_000, 8, 20, seed=1)
    truth = exact_neighbours(vectors, 10)
    rng = np.random.default_rng(2)
    guess = rng.integers(2_000, size=(2_000, 10))
    found = [
        recall(graph.build(vectors, lambda item: guess[item].tolist(), m=10, rounds=rounds), truth)
        for rounds in (0, 2, 6)
    ]
    assert found[0] < 0.05
    assert found[0] < found[1] < found[2]
    assert found[2] >= 0.9, found


def test_reverse_lists_who_names_an_item():
    neighbours = np.array([[1, 2], [2, -1], [1, 0]], dtype=np.int32)
    np.testing.assert_array_equal(graph._reverse(neighbours, 2), [[2, -1], [0, 2], [0, 1]])
    np.testing.assert_array_equal(graph._reverse(neighbours, 1), [[2], [0], [0]])


@pytest.mark.parametrize("items", [1, 2, 5])
def test_fewer_items_than_neighbours(items):
    vectors = np.arange(items * 3, dtype=np.float32).reshape(items, 3)
    built = graph.build(vectors, lambda item: list(range(items)), m=32)
    assert built.shape == (items, max(items - 1, 0))
    for item, row in enumerate(built):
        assert sorted(row.tolist()) == [other for other in range(items) if other != item]


def test_the_walk_reaches_the_nearest_from_far_away():
    """On an exact graph over a connected cloud, one bad seed is enough: the walk finds the exact top 10."""
    rng = np.random.default_rng(3)
    points = rng.random((3_000, 2)).astype(np.float32)
    neighbours = exact_neighbours(points, 12).astype(np.int32)
    queries = rng.random((50, 2)).astype(np.float32)
    far = np.array([int(np.argmax(points.sum(axis=1)))], dtype=np.int32)  # the corner item
    hits = []
    for query in queries:
        found = graph.search(query, far, neighbours, points, 20, -1)
        distance = ((points[found] - query) ** 2).sum(axis=1)
        assert (np.diff(distance) >= 0).all()  # closest first
        truth = np.argsort(((points - query) ** 2).sum(axis=1))[:10]
        hits.append(len(set(found[:10].tolist()) & set(truth.tolist())) / 10)
    assert np.mean(hits) >= 0.98, np.mean(hits)


def test_the_walk_leaves_out_the_excluded_item_and_keeps_a_full_pool():
    points = clustered(500, 4, 5, seed=4)
    neighbours = exact_neighbours(points, 8).astype(np.int32)
    found = graph.search(points[7], np.array([7, 8], dtype=np.int32), neighbours, points, 30, 7)
    assert 7 not in found.tolist() and len(found) == len(set(found.tolist())) == 30
    assert graph.search(points[7], np.array([7], dtype=np.int32), neighbours, points, 30, -1)[0] == 7


def keys(rows: int, tenant: str = "nl") -> pa.Table:
    return pa.table({"tenant": [tenant] * rows, "product_id": [f"{i:05d}" for i in range(rows)]})


def vectors_and_truth() -> tuple[np.ndarray, np.ndarray]:
    """64-d vectors with 12 effective dimensions, as encoder features have few: 16 components keep their neighbours."""
    latent = clustered(3_000, 12, 30, seed=5)
    mixing = np.random.default_rng(6).standard_normal((12, 64)).astype(np.float32)
    vectors = latent @ mixing + 20.0
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, exact_neighbours(unit, 10)


def test_the_graph_finds_what_the_forest_alone_misses():
    """The same forest and search_k, with and without the walk: the graph turns a poor recall into a near-exact one."""
    vectors, truth = vectors_and_truth()
    asked = range(0, 3_000, 15)
    found = {}
    for neighbours in (0, 16):
        built = index.build(
            keys(3_000), vectors, model_id="test", n_trees=5, dims=16, candidates=20, neighbours=neighbours, search_k=40
        )
        found[neighbours] = recall(
            np.array([[int(n.product_id) for n in built.similar("nl", f"{q:05d}", 10)] for q in asked]),
            truth[list(asked)],
        )
    assert found[16] >= 0.95, found
    assert found[16] > found[0] + 0.1, found


def test_the_graph_is_saved_memory_mapped_and_answers_alike(tmp_path):
    vectors, _ = vectors_and_truth()
    built = index.build(keys(3_000), vectors, model_id="test", n_trees=10, dims=16, candidates=30, neighbours=12)
    assert built.manifest["neighbours"] == 12 and built.graph.shape == (3_000, 12)
    built.save(tmp_path)
    assert {"visual-reduced.npy", "visual-graph.npy"} <= {p.name for p in tmp_path.iterdir()}
    loaded = index.VisualIndex.load(tmp_path)
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "visual-graph.npy") in maps and str(tmp_path / "visual-reduced.npy") in maps
    for product in ("00000", "01234", "02999"):
        assert loaded.similar("nl", product, 10) == built.similar("nl", product, 10)
    assert loaded.nearest("nl", vectors[42], 1)[0].product_id == "00042"
    assert index.itemitem_rows(loaded, 5).equals(index.itemitem_rows(built, 5))
    loaded.unload()
    (tmp_path / "visual-graph.npy").unlink()
    with pytest.raises(index.NotIndexed, match=r"visual-graph\.npy is missing"):
        index.VisualIndex.load(tmp_path)


def test_no_graph_without_reduced_search_or_when_turned_off(tmp_path):
    vectors, _ = vectors_and_truth()
    for options in ({"dims": None}, {"dims": 16, "neighbours": 0}):
        built = index.build(keys(3_000), vectors[:, :32], model_id="test", n_trees=5, **options)
        assert built.manifest["neighbours"] == 0 and built.graph is None
        folder = built.save(tmp_path / str(options["dims"]))
        assert not {"visual-reduced.npy", "visual-graph.npy"} & {p.name for p in folder.iterdir()}
    with pytest.raises(ValueError, match="neighbours must be 0 or more"):
        index.build(keys(3_000), vectors, model_id="test", dims=16, neighbours=-1)


def test_each_tenant_walks_its_own_graph():
    """Two tenants, one of them tiny: neighbour numbers are per tenant, and a list never crosses to the other."""
    vectors, _ = vectors_and_truth()
    table = pa.concat_tables([keys(2_990, "nl"), keys(10, "be")])
    built = index.build(table, vectors, model_id="test", n_trees=5, dims=16, candidates=20, neighbours=16)
    tiny = built.graph[:10]  # rows are in (tenant, product) order, so "be" comes first
    assert (tiny[:, 9:] == -1).all() and sorted(tiny[0, :9].tolist()) == list(range(1, 10))
    assert built.graph[10:].max() < 2_990
    rows = index.itemitem_rows(built, 20)
    be = rows.filter(pa.compute.equal(rows.column("tenant"), "be"))
    assert be.num_rows == 10 * 9
    assert set(be.column("related_product_id").to_pylist()) <= {f"{i:05d}" for i in range(10)}


def test_a_vector_that_is_not_a_number_is_refused():
    vectors, _ = vectors_and_truth()
    built = index.build(keys(3_000), vectors, model_id="test", n_trees=5, dims=16, neighbours=8)
    bad = vectors[0].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        built.nearest("nl", bad, 5)
    points = vectors[:, :16].copy()
    neighbours = exact_neighbours(points, 8).astype(np.int32)
    query = np.full(16, np.nan, dtype=np.float32)
    assert graph.search(query, np.array([0, 1], dtype=np.int32), neighbours, points, 10, -1).size == 0


def test_building_the_graphs_reports_progress_over_all_tenants():
    vectors, _ = vectors_and_truth()
    table = pa.concat_tables([keys(2_000, "nl"), keys(1_000, "be")])
    heard = []
    index.build(
        table,
        vectors,
        model_id="test",
        n_trees=5,
        dims=16,
        neighbours=8,
        progress=lambda done, total: heard.append((done, total)),
    )
    assert {total for _, total in heard} == {3_000}
    assert [done for done, _ in heard] == sorted(done for done, _ in heard)
    assert heard[-1] == (3_000, 3_000) and (1_000, 3_000) in heard  # "be" (1,000 rows) is built first


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda g: g[:-1], r"visual-graph.npy holds int32 \(2999, 8\), the index needs int32 \(3000, 8\)"),
        (lambda g: g.astype(np.int64), "visual-graph.npy holds int64"),
        (lambda g: np.where(g == g.max(), 3_000, g).astype(np.int32), "names an item outside tenant 'nl'"),
    ],
)
def test_a_graph_that_does_not_fit_the_items_is_refused(tmp_path, damage, message):
    """The walk is compiled without bounds checks, so a graph file that could make it read past its arrays is refused on load."""
    vectors, _ = vectors_and_truth()
    index.build(keys(3_000), vectors, model_id="test", n_trees=5, dims=16, neighbours=8).save(tmp_path)
    np.save(tmp_path / "visual-graph.npy", damage(np.load(tmp_path / "visual-graph.npy")))
    with pytest.raises(index.NotIndexed, match=message):
        index.VisualIndex.load(tmp_path)
