"""Benchmark: the full build at 1M, 5M and 20M events over 180,000 products, against two baselines.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_build.py              # 1M, 5M and 20M events
    .venv/bin/python tests/bench/bench_build.py --sizes 1M   # just one size

For each size it generates a shop once (cached under ``bench-data/``, Parquet
events only: writing 20M records with fastavro would take minutes and time
nothing of etalage's), then, each in a fresh process so peak memory is its own:

* ``etalage build`` with the Numba kernel: every step's time and the peak RSS;
* ``etalage build --pairs sql``: the same pipeline with the plain DuckDB
  self-join of ``sql/pair_counts.sql`` (1M and 5M only unless ``--sql-all``);
* etalage's kernel step alone in a fresh process on the built warehouse,
  measured exactly like the next one (time and peak memory of that process);
* a straightforward SciPy baseline on the same ``session_items``: sparse
  ``X.T @ X``, NumPy Jaccard and LLR (Mahout's formula), top-N per product by
  one ``lexsort``, for the same three algorithms.

The figures to compare are the *item-item stage*: the time from
``session_items`` to the ranked lists of the algorithms in memory (etalage's
``kernel`` step, which also makes ``popular``; the SQL path's ``pair_counts``,
``ranked_pairs`` and ``popular``; the baseline's compute, which makes the
three co-occurrence algorithms only), and then the whole stage including
writing the ``itemitem`` table into the warehouse.
Ratios are taken within one run, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"1M": 1_000_000, "5M": 5_000_000, "20M": 20_000_000}
IN_MEMORY = {"kernel": ("kernel",), "sql": ("pair_counts", "ranked_pairs", "popular")}
"""Steps that compute all algorithms' lists, per path; the rest of the item-item stage writes them."""
ITEM_STAGE = ("item_counts", "tenant_sessions", "kernel", "pair_counts", "ranked_pairs", "popular", "itemitem")
HOLDOUT = tuple(f"evaluation {step}" for step in ("session_items",) + ITEM_STAGE)


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generate(folder: Path, events: int) -> None:
    from engine import config
    from engine.example import generator

    spec = generator.ShopSpec(products=180_000, brands=1_850, events=events, days=28, seed=1)
    generator.write_shop(generator.generate(spec), folder, ("parquet",), images=False)
    (folder / "etalage.toml").write_text(config.example_toml("parquet"))


def run_build(folder: Path, pairs: str, warehouse_name: str) -> dict:
    import dataclasses

    from engine import build, config
    from engine.publish import warehouse

    cfg = config.load(folder / "etalage.toml")
    # The last 10 of 28 days held out: about 1M test sessions at 20M events.
    cfg = dataclasses.replace(cfg, warehouse=folder / warehouse_name, evaluation=config.Evaluation(test_days=10))
    begin = time.perf_counter()
    result = build.build(cfg, pairs=pairs)
    total = time.perf_counter() - begin
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        sessions, pairs_scored = connection.execute(
            "SELECT sessions, pairs FROM evaluation WHERE algorithm = 'llr' ORDER BY build_id DESC LIMIT 1"
        ).fetchone()
    return {
        "total": total,
        "seconds": result.seconds,
        "rows": result.rows,
        "peak_gib": peak_gib(),
        "test_sessions": sessions,
        "test_pairs": pairs_scored,
    }


def run_kernel(warehouse_path: Path, top_n: int = 20, min_support: int = 2) -> dict:
    """etalage's kernel step alone, in a fresh process, on a built warehouse: like the SciPy baseline."""
    from engine.pipeline import itemitem
    from engine.publish import warehouse

    begin = time.perf_counter()
    with warehouse.connect(warehouse_path, read_only=True) as connection:
        rows = itemitem.kernel_rows(connection, top_n=top_n, min_support=min_support)
    return {"compute": time.perf_counter() - begin, "rows": rows.num_rows, "peak_gib": peak_gib()}


def run_scipy(warehouse_path: Path, top_n: int = 20, min_support: int = 2) -> dict:
    """The baseline: sparse X.T @ X, vectorised scores, top-N by lexsort.

    Timed like etalage's kernel step: from session_items in DuckDB to the ranked lists in memory.
    """
    import numpy as np
    import scipy.sparse as sp

    from engine.publish import warehouse

    begin = time.perf_counter()
    with warehouse.connect(warehouse_path, read_only=True) as connection:
        rows = connection.execute(
            """
            SELECT dense_rank() OVER (ORDER BY tenant, session_id) - 1 AS session,
                   dense_rank() OVER (ORDER BY tenant, product_id) - 1 AS item,
                   tenant
            FROM session_items
            """
        ).fetchnumpy()
        tenant_sessions = dict(connection.execute("SELECT tenant, sessions FROM tenant_sessions").fetchall())
    session, item = rows["session"].astype(np.int64), rows["item"].astype(np.int64)
    n_items = int(item.max()) + 1
    x = sp.csr_matrix((np.ones(session.size, dtype=np.int32), (session, item)), shape=(int(session.max()) + 1, n_items))
    counts = np.asarray(x.sum(axis=0)).ravel().astype(np.int64)
    item_tenant = np.empty(n_items, dtype=object)
    item_tenant[item] = rows["tenant"]
    n_per_item = np.array([tenant_sessions[t] for t in item_tenant], dtype=np.int64)
    pairs = (x.T @ x).tocoo()
    keep = (pairs.row != pairs.col) & (pairs.data >= min_support)
    a, b, k11 = pairs.row[keep], pairs.col[keep], pairs.data[keep].astype(np.int64)
    na, nb, n = counts[a], counts[b], n_per_item[a]

    def xlogx(v):
        v = v.astype(np.float64)
        return np.where(v > 0, v * np.log(np.where(v > 0, v, 1)), 0.0)

    def entropy(*k):
        return xlogx(sum(k)) - sum(xlogx(v) for v in k)

    k12, k21 = nb - k11, na - k11
    k22 = n - na - nb + k11
    llr = 2 * np.maximum(0, entropy(k11 + k12, k21 + k22) + entropy(k11 + k21, k12 + k22) - entropy(k11, k12, k21, k22))
    scores = {"cooccurrence": k11.astype(np.float64), "jaccard": k11 / (na + nb - k11), "llr": llr}
    kept = 0
    for score in scores.values():
        order = np.lexsort((b, -score, a))
        first = np.searchsorted(a[order], np.arange(n_items))
        rank = np.arange(order.size) - np.repeat(first, np.diff(np.r_[first, order.size]))
        kept += int((rank < top_n).sum())
    return {"compute": time.perf_counter() - begin, "pairs": int(keep.sum()), "rows": kept, "peak_gib": peak_gib()}


def child(*args: str, timeout: float = 3600) -> dict | None:
    """Run one measurement in a fresh interpreter; None when it fails or times out."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        print(f"    ({' '.join(args[:2])} failed: {done.stderr.strip().splitlines()[-1:]})", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,5M,20M")
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--sql-all", action="store_true", help="also run the SQL self-join at 20M events")
    options = parser.parse_args()

    header = (
        f"{'events':>7} {'stage':<44}{'etalage':>10}{'sql join':>10}{'scipy':>10}"
        f"{'sql/etalage':>13}{'scipy/etalage':>15}"
    )
    lines = [header]
    for label in options.sizes.split(","):
        folder = options.data / f"shop-{label}"
        if not (folder / "etalage.toml").exists():
            print(f"generating {label} events into {folder} ...", flush=True)
            subprocess.run(
                [sys.executable, __file__, "_generate", str(folder), str(SIZES[label])], check=True, cwd=ROOT
            )
        print(f"{label}: etalage build (kernel) ...", flush=True)
        kernel = child("_build", str(folder), "kernel", "warehouse.duckdb")
        sql = None
        if label != "20M" or options.sql_all:
            print(f"{label}: etalage build --pairs sql ...", flush=True)
            sql = child("_build", str(folder), "sql", "warehouse-sql.duckdb", timeout=1800)
        print(f"{label}: kernel alone and scipy baseline, each in a fresh process ...", flush=True)
        alone = child("_kernel", str(folder / "warehouse.duckdb"))
        scipy = child("_scipy", str(folder / "warehouse.duckdb"))

        def stage(result: dict | None, steps: tuple[str, ...]) -> float | None:
            return sum(result["seconds"].get(s, 0.0) for s in steps) if result else None

        rows = [
            (
                "all algorithms, in memory (s)",
                stage(kernel, IN_MEMORY["kernel"]),
                stage(sql, IN_MEMORY["sql"]),
                scipy and scipy["compute"],
            ),
            ("same, fresh process (s)", alone and alone["compute"], None, scipy and scipy["compute"]),
            ("same, fresh process: peak (GiB)", alone and alone["peak_gib"], None, scipy and scipy["peak_gib"]),
            ("item-item stage into itemitem (s)", stage(kernel, ITEM_STAGE), stage(sql, ITEM_STAGE), None),
            ("evaluation: lists before the cut-off (s)", stage(kernel, HOLDOUT), stage(sql, HOLDOUT), None),
            (
                "evaluation: scoring the test sessions (s)",
                stage(kernel, ("evaluation scores",)),
                stage(sql, ("evaluation scores",)),
                None,
            ),
            ("whole build from Parquet (s)", kernel and kernel["total"], sql and sql["total"], None),
            (
                "peak memory, whole process (GiB)",
                kernel and kernel["peak_gib"],
                sql and sql["peak_gib"],
                scipy and scipy["peak_gib"],
            ),
        ]
        for name, ours, join, base in rows:
            lines.append(
                f"{label:>7} {name:<44}{_num(ours):>10}{_num(join):>10}{_num(base):>10}"
                f"{_ratio(join, ours):>13}{_ratio(base, ours):>15}"
            )
        if kernel:
            steps = ", ".join(f"{k} {v:.2f}" for k, v in kernel["seconds"].items())
            lines.append(f"{'':>7} etalage steps (s): {steps}")
            lines.append(f"{'':>7} rows: {kernel['rows']}")
            lines.append(
                f"{'':>7} evaluation: {kernel['test_sessions']:,} test sessions, {kernel['test_pairs']:,} next-item pairs"
            )
        print("\n".join(lines), flush=True)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(other: float | None, ours: float | None) -> str:
    return "-" if other is None or not ours else f"{other / ours:.2f}x"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        command, *rest = sys.argv[1:]
        if command == "_generate":
            generate(Path(rest[0]), int(rest[1]))
        elif command == "_build":
            print(json.dumps(run_build(Path(rest[0]), rest[1], rest[2])))
        elif command == "_kernel":
            print(json.dumps(run_kernel(Path(rest[0]))))
        elif command == "_scipy":
            print(json.dumps(run_scipy(Path(rest[0]))))
    else:
        main()
