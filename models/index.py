"""The Annoy forest over the image vectors: build, save, memory-map, query, and the ``visual`` itemitem rows.

Comparing every photo with every other one grows with the square of the
catalogue (the talk's "prohibitive for large image sets"). Annoy builds a
forest of random-projection trees instead: each tree splits the vectors by
random hyperplanes until a leaf holds a few dozen, so vectors that are close
tend to share leaves, and a query only measures the distance to the
candidates the trees lead it to. More trees (``n_trees``) and more candidates
per query (``search_k``) buy recall with time; ``tests/bench/bench_visual.py``
measures the trade against exact search.

**One forest per tenant.** A product id can be sold in several countries,
and a country's list must never name a product it does not sell. Each tenant
gets its own Annoy file over its own catalogue, so isolation holds by
construction, not by filtering after the search (which would also return
short lists for small tenants).

A saved index is a folder:

* ``visual-<tenant>.ann``: the tenant's forest; Annoy memory-maps it on
  load, so many server processes share one copy in the page cache;
* ``visual-items.arrow``: which (tenant, product_id) each Annoy item number
  is (Arrow IPC, memory-mapped too);
* ``visual.json``: model id, dimension, metric, trees and counts.

**Reduced search** (``dims``, see :mod:`models.reduce`): the forests are
built over the vectors' first ``dims`` principal components, and the
``candidates`` best found are re-ranked exactly on the full vectors. Two
more files then: ``visual-vectors.npy`` (the full vectors, one row per row of
the item table, memory-mapped) and ``visual-projection.npy``.

**Neighbour graph** (``neighbours``, with reduced search; see
:mod:`models.graph`): each item's nearest items, which a query walks from the
forest's results before the re-ranking. It finds what the trees miss at a
fraction of the candidates: two more memory-mapped files,
``visual-reduced.npy`` (the components the forests hold) and
``visual-graph.npy`` (``neighbours`` item numbers per row of the item table).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from annoy import AnnoyIndex

from models import METRICS, Metric, graph
from models.reduce import Projection, fit, unit

ITEMS_FILE = "visual-items.arrow"
MANIFEST_FILE = "visual.json"
VECTORS_FILE = "visual-vectors.npy"
PROJECTION_FILE = "visual-projection.npy"
REDUCED_FILE = "visual-reduced.npy"
GRAPH_FILE = "visual-graph.npy"

FIRST_GUESS_SEARCH_K = 300
"""Annoy's search_k for each item's first neighbours when building the graph: NN-descent improves them, so few suffice."""

ITEMITEM_SCHEMA = pa.schema(
    [
        ("tenant", pa.string()),
        ("algorithm", pa.string()),
        ("product_id", pa.string()),
        ("rank", pa.int32()),
        ("related_product_id", pa.string()),
        ("distance_score", pa.float64()),
        ("cooccurrence", pa.int64()),
        ("product_sessions", pa.int64()),
        ("related_sessions", pa.int64()),
    ]
)
"""The columns and types of the warehouse's ``itemitem`` table."""

_TENANT = re.compile(r"[A-Za-z0-9_-]+")


class NotIndexed(LookupError):
    """A product or tenant is not in the index, or the index folder is incomplete."""


@dataclass(frozen=True)
class Neighbour:
    """One search result: the product and its score, higher is closer (see :func:`similarity`)."""

    product_id: str
    score: float


def similarity(metric: str, distances: np.ndarray) -> np.ndarray:
    """Annoy's distances as scores where higher is closer, as ``itemitem.distance_score`` wants.

    * angular: the cosine similarity, ``1 - d**2 / 2`` (Annoy's angular distance is ``sqrt(2 - 2 cos)``);
    * euclidean: ``1 / (1 + d)``;
    * dot: the inner product itself (Annoy already returns it).
    """
    distances = np.asarray(distances, dtype=np.float64)
    if metric == "angular":
        return 1.0 - distances**2 / 2.0
    if metric == "euclidean":
        return 1.0 / (1.0 + distances)
    return distances


class VisualIndex:
    """Per-tenant Annoy forests and the table of which product each item is.

    Build one with :func:`build`, write it with :meth:`save`, and open a saved
    one with :meth:`load` (memory-mapped, read-only).
    """

    def __init__(
        self,
        forests: dict[str, AnnoyIndex],
        items: pa.Table,
        manifest: dict,
        vectors: np.ndarray | None = None,
        projection: Projection | None = None,
        reduced: np.ndarray | None = None,
        neighbours: np.ndarray | None = None,
    ) -> None:
        self.forests = forests
        self.items = items
        self.manifest = manifest
        self.dim: int = manifest["dim"]
        self.metric: str = manifest["metric"]
        self.model_id: str = manifest["model_id"]
        self.search_k: int = manifest["search_k"]
        self.candidates: int = manifest.get("candidates", 0)
        self.vectors = vectors  # full vectors per item-table row; only for reduced search
        self.projection = projection
        self.reduced = reduced  # the forests' vectors per item-table row; only with a graph
        self.graph = neighbours  # item numbers (within the tenant) of each row's nearest items
        self.n_trees: int = manifest["n_trees"]
        self._products: dict[str, list[str]] = {}
        self._position: dict[str, dict[str, int]] = {}
        self._first_row: dict[str, int] = {}
        tenants = items.column("tenant").to_numpy(zero_copy_only=False)
        for tenant in forests:
            rows = np.flatnonzero(tenants == tenant)
            products = items.column("product_id").take(pa.array(rows)).to_pylist()
            self._first_row[tenant] = int(rows[0])
            self._products[tenant] = products
            self._position[tenant] = {product: i for i, product in enumerate(products)}
        self._walk: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if neighbours is not None and reduced is not None:
            _check_graph(neighbours, reduced, items.num_rows, manifest)
            for tenant, first in self._first_row.items():
                end = first + len(self._products[tenant])
                part = np.asarray(neighbours[first:end])
                if part.size and not -1 <= part.min() <= part.max() < end - first:
                    msg = f"{GRAPH_FILE} names an item outside tenant {tenant!r}'s {end - first} pictures"
                    raise NotIndexed(msg)
                self._walk[tenant] = (part, np.asarray(reduced[first:end]))
        if self._walk:
            self._compile_walk()

    @property
    def tenants(self) -> list[str]:
        return sorted(self.forests)

    def __contains__(self, key: tuple[str, str]) -> bool:
        tenant, product_id = key
        return product_id in self._position.get(tenant, {})

    def products(self, tenant: str) -> list[str]:
        """The tenant's indexed products, in Annoy item order."""
        return self._products.get(tenant, [])

    def vector(self, tenant: str, product_id: str) -> np.ndarray:
        """The stored vector of a product."""
        forest, item = self._item(tenant, product_id)
        if self.vectors is not None:
            return np.array(self.vectors[self._first_row[tenant] + item], dtype=np.float32)
        return np.array(forest.get_item_vector(item), dtype=np.float32)

    def similar(self, tenant: str, product_id: str, k: int = 10, search_k: int | None = None) -> list[Neighbour]:
        """The ``k`` products of ``tenant`` that look most like ``product_id``, never the product itself."""
        forest, item = self._item(tenant, product_id)
        # One more than asked for, since the product itself usually comes back first (and duplicates of its photo may).
        if self.projection is not None:
            ids = forest.get_nns_by_item(item, max(self.candidates, k + 1), search_k=self._search_k(search_k, k))
            ids = self._walked(tenant, ids, k, exclude=item)
            assert self.vectors is not None  # a reduced search keeps the full vectors
            return self._reranked(tenant, ids, self.vectors[self._first_row[tenant] + item], item)[:k]
        ids, distances = forest.get_nns_by_item(
            item, k + 1, search_k=self._search_k(search_k, k + 1), include_distances=True
        )
        return self._neighbours(tenant, ids, distances, exclude=item)[:k]

    def nearest(self, tenant: str, vector: np.ndarray, k: int = 10, search_k: int | None = None) -> list[Neighbour]:
        """The ``k`` products of ``tenant`` nearest to ``vector`` (an uploaded photo's or a text's encoding).

        Raises:
            ValueError: the vector's length is not the index's dimension, or it holds NaN or infinite values.
        """
        vector = np.asarray(vector, dtype=np.float32).ravel()
        if vector.size != self.dim:
            msg = f"a vector of {vector.size} values was given, the index holds {self.dim}-dimensional vectors ({self.model_id})"
            raise ValueError(msg)
        if not np.isfinite(vector).all():
            msg = "the vector contains NaN or infinite values"
            raise ValueError(msg)
        forest = self._forest(tenant)
        if self.projection is not None:
            full = unit(vector) if self.metric == "angular" else vector
            reduced = self.projection(full[None, :])[0]
            ids = forest.get_nns_by_vector(
                reduced.tolist(), max(self.candidates, k), search_k=self._search_k(search_k, k)
            )
            ids = self._walked(tenant, ids, k, query=reduced)
            return self._reranked(tenant, ids, full, None)[:k]
        ids, distances = forest.get_nns_by_vector(
            vector.tolist(), k, search_k=self._search_k(search_k, k), include_distances=True
        )
        return self._neighbours(tenant, ids, distances, exclude=None)

    def save(self, directory: Path) -> Path:
        """Write the index into ``directory`` (created if needed); returns it."""
        directory.mkdir(parents=True, exist_ok=True)
        for tenant, forest in self.forests.items():
            forest.save(str(directory / _forest_file(tenant)))
        with pa.OSFile(str(directory / ITEMS_FILE), "wb") as sink, pa.ipc.new_file(sink, self.items.schema) as writer:
            writer.write_table(self.items)
        if self.projection is not None:
            np.save(directory / VECTORS_FILE, np.asarray(self.vectors, dtype=np.float32))
            self.projection.save(directory / PROJECTION_FILE)
        if self.graph is not None:
            np.save(directory / REDUCED_FILE, np.asarray(self.reduced, dtype=np.float32))
            np.save(directory / GRAPH_FILE, np.asarray(self.graph, dtype=np.int32))
        (directory / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=1, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path) -> VisualIndex:
        """Open a saved index; the forests and the item table are memory-mapped, not read into memory.

        Raises:
            NotIndexed: a file of the index is missing.
        """
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            msg = f"{directory} holds no visual index ({MANIFEST_FILE} is missing)"
            raise NotIndexed(msg)
        manifest = json.loads(manifest_path.read_text())
        forests = {}
        for tenant in manifest["tenants"]:
            path = directory / _forest_file(tenant)
            if not path.is_file():
                msg = f"{path} is missing from the visual index"
                raise NotIndexed(msg)
            forest = AnnoyIndex(*_forest_shape(manifest))
            forest.load(str(path))  # mmap, no prefault
            forests[tenant] = forest
        items = pa.ipc.open_file(pa.memory_map(str(directory / ITEMS_FILE))).read_all()
        if not manifest.get("dims"):
            return cls(forests, items, manifest)
        needed = (VECTORS_FILE, PROJECTION_FILE) + ((REDUCED_FILE, GRAPH_FILE) if manifest.get("neighbours") else ())
        for name in needed:
            if not (directory / name).is_file():
                msg = f"{directory / name} is missing from the visual index"
                raise NotIndexed(msg)
        vectors = np.load(directory / VECTORS_FILE, mmap_mode="r")
        projection = Projection.load(directory / PROJECTION_FILE)
        if not manifest.get("neighbours"):
            return cls(forests, items, manifest, vectors, projection)
        reduced = np.load(directory / REDUCED_FILE, mmap_mode="r")
        neighbours = np.load(directory / GRAPH_FILE, mmap_mode="r")
        return cls(forests, items, manifest, vectors, projection, reduced, neighbours)

    def unload(self) -> None:
        """Unmap the forests (a server swapping snapshots calls this on the old one)."""
        for forest in self.forests.values():
            forest.unload()

    def _forest(self, tenant: str) -> AnnoyIndex:
        if tenant not in self.forests:
            msg = f"tenant {tenant!r} has no visual index (tenants: {', '.join(self.tenants)})"
            raise NotIndexed(msg)
        return self.forests[tenant]

    def _item(self, tenant: str, product_id: str) -> tuple[AnnoyIndex, int]:
        forest = self._forest(tenant)
        item = self._position[tenant].get(product_id)
        if item is None:
            msg = f"product {product_id!r} of tenant {tenant!r} has no image in the visual index"
            raise NotIndexed(msg)
        return forest, item

    def _walked(self, tenant: str, ids: list[int], k: int, query: np.ndarray | None = None, exclude: int = -1):
        """The forest's candidates, improved by walking the tenant's graph from them (as they are without a graph).

        ``query`` defaults to the components of item ``exclude``: a "more like this" search.
        """
        if tenant not in self._walk:
            return ids
        neighbours, points = self._walk[tenant]
        start = points[exclude] if query is None else query
        return graph.search(
            start, np.asarray(ids, dtype=np.int32), neighbours, points, max(self.candidates, k), exclude
        )

    def _compile_walk(self) -> None:
        """Compile the graph walk for the argument types queries pass, now rather than in the first request.

        ``similar`` passes a row of the memory-mapped (read-only) components
        and ``nearest`` a fresh query vector: Numba compiles each kind once
        (and caches them on disk).
        """
        neighbours, points = next(iter(self._walk.values()))
        seeds = np.zeros(1, dtype=np.int32)
        for query in (points[0], np.array(points[0])):
            graph.search(query, seeds, neighbours, points, 1, -1)

    def _search_k(self, search_k: int | None, k: int) -> int:
        """The search_k asked for, else the index's; -1 is Annoy's default, ``n_trees`` x the ``k`` results wanted.

        A reduced search asks Annoy for ``candidates`` results, not ``k``, so
        Annoy's own default would inspect ``n_trees * candidates``; with a
        graph to finish the search, ``n_trees * k`` is plenty.
        """
        chosen = self.search_k if search_k is None else search_k
        if chosen < 0 and self._walk:
            return self.n_trees * k
        return chosen

    def _reranked(self, tenant: str, ids: list[int], query: np.ndarray, exclude: int | None) -> list[Neighbour]:
        """Candidates of a reduced search ordered by the exact metric on the full vectors (ties by item number)."""
        rows = np.array([i for i in ids if i != exclude], dtype=np.int64)
        if rows.size == 0:
            return []
        assert self.vectors is not None  # a reduced search (the only one that reranks) keeps them
        full = np.asarray(self.vectors[self._first_row[tenant] + rows], dtype=np.float32)
        query = np.asarray(query, dtype=np.float32)
        # stored vectors are unit length
        scores = full @ unit(query) if self.metric == "angular" else 1.0 / (1.0 + np.linalg.norm(full - query, axis=1))
        order = np.lexsort((rows, -scores))
        products = self._products[tenant]
        return [Neighbour(products[rows[i]], float(scores[i])) for i in order]

    def _neighbours(self, tenant: str, ids: list[int], distances: list[float], exclude: int | None) -> list[Neighbour]:
        products = self._products[tenant]
        scores = similarity(self.metric, np.array(distances))
        return [Neighbour(products[i], float(s)) for i, s in zip(ids, scores, strict=True) if i != exclude]


def build(
    keys: pa.Table,
    vectors: np.ndarray,
    *,
    model_id: str,
    metric: str = "angular",
    n_trees: int = 50,
    search_k: int = -1,
    seed: int = 42,
    n_jobs: int = 1,
    dims: int | None = None,
    candidates: int = 100,
    neighbours: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> VisualIndex:
    """Build one forest per tenant over the rows of ``vectors``.

    Args:
        keys: ``tenant`` and ``product_id`` per row of ``vectors``; a product may
            appear under several tenants, but only once per tenant.
        vectors: float32 ``(rows, dim)``.
        model_id: the encoder that made the vectors (kept in the manifest, so a
            query vector from another model can be told apart).
        metric: ``angular``, ``euclidean`` or ``dot``.
        n_trees: trees per forest; more is better recall, a bigger file, a slower build.
        search_k: candidates a query inspects by default (-1: Annoy's ``n_trees * k``).
        seed: Annoy's random seed; with ``n_jobs=1`` the same input gives the same forest.
        n_jobs: threads building trees (-1: all cores; then the forest depends on thread timing).
        dims: search the first ``dims`` principal components and re-rank exactly
            (:mod:`models.reduce`; angular and euclidean only); None searches the full
            vectors, as does a catalogue of at most ``2 * dims`` photos.
        candidates: how many results of a reduced search are re-ranked (and,
            with a graph, how many the walk keeps).
        neighbours: with reduced search, each item's this-many nearest items
            are kept as a graph that queries walk (:mod:`models.graph`); 0: none.
        progress: called with (done, total) while the graphs are built, the
            longest part of an index build (about 30 s at 180,000 pictures).

    Raises:
        ValueError: bad metric, shapes that disagree, a duplicate product, or non-finite values.
    """
    if metric not in METRICS:
        msg = f"metric must be one of {', '.join(METRICS)}, not {metric!r}"
        raise ValueError(msg)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != keys.num_rows:
        msg = f"{keys.num_rows} keys need a ({keys.num_rows}, dim) matrix of vectors, got shape {vectors.shape}"
        raise ValueError(msg)
    if not np.isfinite(vectors).all():
        msg = "vectors contain NaN or infinite values"
        raise ValueError(msg)
    if n_trees < 1:
        msg = f"n_trees must be at least 1, not {n_trees}"
        raise ValueError(msg)
    if neighbours < 0:
        msg = f"neighbours must be 0 or more, not {neighbours}"
        raise ValueError(msg)
    dim = vectors.shape[1]
    projection = None
    if dims is not None and not 1 <= dims < dim:
        msg = f"dims must be between 1 and {dim - 1} (the vectors have {dim}), not {dims}"
        raise ValueError(msg)
    if dims is not None and metric == "dot":
        msg = "reduced search (dims) needs the angular or euclidean metric"
        raise ValueError(msg)
    if dims is not None and vectors.shape[0] <= 2 * dims:
        dims = None  # too few photos to estimate the components: search them all in full, which is fast at this size
    if dims is not None:
        full = unit(vectors) if metric == "angular" else vectors
        projection = fit(full, dims, seed)
    order = pc.sort_indices(keys, [("tenant", "ascending"), ("product_id", "ascending")])
    keys = keys.select(["tenant", "product_id"]).take(order)
    vectors = vectors[order.to_numpy()]
    if projection is not None:
        vectors = unit(vectors) if metric == "angular" else vectors
        searched = projection(vectors)
    else:
        searched = vectors
    tenant_column = keys.column("tenant").to_numpy(zero_copy_only=False)
    product_column = keys.column("product_id").to_numpy(zero_copy_only=False)
    forests: dict[str, AnnoyIndex] = {}
    item = np.empty(keys.num_rows, dtype=np.int32)
    walk = projection is not None and neighbours > 0
    nearest = np.full((keys.num_rows, neighbours if walk else 0), -1, dtype=np.int32)
    for tenant in np.unique(tenant_column):
        if not _TENANT.fullmatch(tenant):
            msg = f"tenant {tenant!r} cannot name a file; tenants are letters, digits, '-' and '_'"
            raise ValueError(msg)
        rows = np.flatnonzero(tenant_column == tenant)
        products = product_column[rows]
        if len(set(products)) != len(products):
            duplicate = next(p for p in products if (products == p).sum() > 1)
            msg = f"product {duplicate!r} appears more than once for tenant {tenant!r}"
            raise ValueError(msg)
        forest = AnnoyIndex(searched.shape[1], "euclidean" if projection is not None else metric)
        forest.set_seed(seed)
        for position, row in enumerate(rows):
            forest.add_item(position, searched[row])
        forest.build(n_trees, n_jobs=n_jobs)
        forests[str(tenant)] = forest
        if walk:
            found = graph.build(
                searched[rows],
                functools.partial(_first_guess, forest, neighbours + 1),
                neighbours,
                progress=None if progress is None else _share(progress, int(rows[0]), rows.size, keys.num_rows),
            )
            nearest[rows, : found.shape[1]] = found
        item[rows] = np.arange(rows.size, dtype=np.int32)
    items = keys.append_column("item", pa.array(item))
    manifest = {
        "model_id": model_id,
        "dim": dim,
        "metric": metric,
        "n_trees": n_trees,
        "search_k": search_k,
        "seed": seed,
        "dims": dims,
        "candidates": candidates if dims is not None else 0,
        "neighbours": neighbours if walk else 0,
        "tenants": sorted(forests),
        "items": {tenant: forest.get_n_items() for tenant, forest in forests.items()},
    }
    if projection is None:
        return VisualIndex(forests, items, manifest)
    if not walk:
        return VisualIndex(forests, items, manifest, vectors, projection)
    return VisualIndex(forests, items, manifest, vectors, projection, searched, nearest)


def itemitem_rows(
    index: VisualIndex,
    top_n: int = 20,
    search_k: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> pa.Table:
    """The ``visual`` rows of ``itemitem``: each indexed product's ``top_n`` look-alikes in its own tenant.

    The rows come in the table's order (tenant, product_id, rank), with
    ``distance_score`` from :func:`similarity` and no click evidence (the
    ``cooccurrence`` and session columns are NULL). Annoy releases the GIL
    while it searches, so the queries run on ``threads`` threads (default:
    one per core); each query's answer does not depend on the others, so the
    rows are the same with any number.
    """
    columns: dict[str, list] = {
        name: [] for name in ("tenant", "product_id", "rank", "related_product_id", "distance_score")
    }
    queries = [(tenant, product) for tenant in index.tenants for product in sorted(index.products(tenant))]
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        answers = pool.map(lambda query: index.similar(query[0], query[1], top_n, search_k), queries)
        for done, ((tenant, product), neighbours) in enumerate(zip(queries, answers, strict=True), start=1):
            columns["tenant"] += [tenant] * len(neighbours)
            columns["product_id"] += [product] * len(neighbours)
            columns["rank"] += range(1, len(neighbours) + 1)
            columns["related_product_id"] += [n.product_id for n in neighbours]
            columns["distance_score"] += [n.score for n in neighbours]
            if progress is not None and (done % 1000 == 0 or done == len(queries)):
                progress(done, len(queries))
    rows = len(columns["tenant"])
    return pa.table(
        {
            "tenant": pa.array(columns["tenant"], pa.string()),
            "algorithm": pa.array(["visual"] * rows, pa.string()),
            "product_id": pa.array(columns["product_id"], pa.string()),
            "rank": pa.array(columns["rank"], pa.int32()),
            "related_product_id": pa.array(columns["related_product_id"], pa.string()),
            "distance_score": pa.array(columns["distance_score"], pa.float64()),
            "cooccurrence": pa.nulls(rows, pa.int64()),
            "product_sessions": pa.nulls(rows, pa.int64()),
            "related_sessions": pa.nulls(rows, pa.int64()),
        },
        schema=ITEMITEM_SCHEMA,
    )


def _check_graph(neighbours: np.ndarray, reduced: np.ndarray, rows: int, manifest: dict) -> None:
    """Refuse graph files whose shape does not fit the item table: the compiled walk does not check its bounds."""
    if neighbours.shape != (rows, manifest["neighbours"]) or neighbours.dtype != np.int32:
        msg = f"{GRAPH_FILE} holds {neighbours.dtype} {neighbours.shape}, the index needs int32 ({rows}, {manifest['neighbours']})"
        raise NotIndexed(msg)
    if reduced.shape != (rows, manifest["dims"]) or reduced.dtype != np.float32:
        msg = f"{REDUCED_FILE} holds {reduced.dtype} {reduced.shape}, the index needs float32 ({rows}, {manifest['dims']})"
        raise NotIndexed(msg)


def _share(progress: Callable[[int, int], None], before: int, rows: int, total: int) -> Callable[[int, int], None]:
    """One tenant's (done, of) as the whole index's: its ``rows`` follow the ``before`` of earlier tenants."""
    return lambda done, of: progress(before + done * rows // of, total)


def _forest_file(tenant: str) -> str:
    return f"visual-{tenant}.ann"


def _first_guess(forest: AnnoyIndex, n: int, item: int) -> list[int]:
    """An item's ``n`` nearest by the forest, where the graph's search starts."""
    return forest.get_nns_by_item(item, n, search_k=FIRST_GUESS_SEARCH_K)


def _forest_shape(manifest: dict) -> tuple[int, Metric]:
    """The dimension and metric of the saved forests: reduced ones are Euclidean over ``dims`` components."""
    if manifest.get("dims"):
        return manifest["dims"], "euclidean"
    return manifest["dim"], manifest["metric"]
