"""Benchmark: the sequence-aware lists' kernels against the co-occurrence kernels they run beside.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_sequences.py --events 5000000

It generates ``bench_build.py``'s shop of that many events once (cached under
``bench-data/sequences-<events>/``, Parquet events, 180,000 products), builds
it once with the evaluation off (so that ``events`` and ``products`` exist),
then counts every session from scratch in one process, timing each kernel
on its own, best of ``--rounds``:

* ``pairs``: the co-occurrence counting (``engine.udfs.pairs.count``) and
  ranking (cooccurrence, jaccard, llr: ``_top_related``), today's kernel step;
* ``follows``: the three follow matrices (``engine.udfs.sequences.count``)
  and their ranking (``_top_followers``), what the sequence-aware lists add.

The SQL that feeds both (``sql/baskets.sql``, ``sql/step_lists.sql``) is
timed apart. It prints one JSON line with the seconds and ``follows/pairs``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import bench_build

ROOT = Path(__file__).resolve().parents[2]


def best(rounds: int, step) -> tuple[float, object]:
    """The fastest of ``rounds`` runs of ``step`` (after one to compile), and its last result."""
    result = step()
    times = []
    for _ in range(rounds):
        begin = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - begin)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    options = parser.parse_args()
    folder = options.data / f"sequences-{options.events}"
    if not (folder / "warehouse.duckdb").exists():
        # bench_build's shop (180,000 products, Parquet events, no pictures), built once with its lean config.
        bench_build.generate(folder, options.events)
        subprocess.run(
            [sys.executable, "-m", "engine", "build", "--config", str(folder / "lean.toml")], check=True, cwd=ROOT
        )

    import numpy as np

    from engine import config, sqlfiles
    from engine.pipeline import sessions
    from engine.pipeline.counts import Counts
    from engine.publish import warehouse
    from engine.udfs import cooccurrence, pairs, sequences

    cfg = config.load(folder / "lean.toml")
    algorithms = cfg.algorithms
    seconds = {}
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        newest = sessions.newest(connection)
        begin = time.perf_counter()
        everything = sessions.Counting("events", "products", sessions.parameters(algorithms, None, newest))
        sessions.count_changes(connection, None, everything)
        connection.register("items", Counts.none().items)
        items = sqlfiles.query(connection, "new_items", {"first": 0}).to_arrow_table()
        connection.unregister("items")
        connection.register("items", items)
        baskets = sqlfiles.query(connection, "baskets").to_arrow_table()
        steps = sqlfiles.query(connection, "step_lists").to_arrow_table()
        seconds["sql"] = time.perf_counter() - begin
    n_items = items.num_rows
    lists = baskets.column("items").combine_chunks()
    signs = baskets.column("sign").to_numpy().astype(np.int32)
    step_lists = steps.column("items").combine_chunks()
    step_signs = steps.column("sign").to_numpy().astype(np.int32)
    sessions_per_item = np.bincount(lists.flatten().to_numpy(), minlength=n_items).astype(np.int64)
    tenant_sessions = np.full(n_items, len(lists), np.int64)
    order = np.arange(n_items, dtype=np.int32)
    threads = cooccurrence.numba.get_num_threads()

    def lists_of(algorithms_: int) -> list[np.ndarray]:
        """Fresh output arrays for a ranking kernel of ``algorithms_`` algorithms."""
        shape = (algorithms_, n_items, algorithms.top_n)
        return [np.zeros(shape, np.int32), np.zeros(shape, np.int32), np.zeros(shape), np.zeros(shape[:2], np.int32)]

    seconds["pairs_count"], counted = best(options.rounds, lambda: pairs.count(lists, signs, n_items))
    arrays = cooccurrence._arrays((counted,), n_items)
    seconds["pairs_rank"], _ = best(
        options.rounds,
        lambda: cooccurrence._top_related(
            *arrays,
            sessions_per_item,
            tenant_sessions,
            order,
            algorithms.min_support,
            algorithms.top_n,
            threads,
            *lists_of(cooccurrence.POPULAR),
        ),
    )
    matrices = sequences.matrices(algorithms.sr_window)
    seconds["follows_count"], follows = best(
        options.rounds,
        lambda: sequences.count(step_lists, step_signs, n_items, matrices),
    )

    def rank_follows() -> None:
        for name, following in matrices.items():
            cooccurrence._top_followers(
                *cooccurrence._arrays((follows[name],), n_items), sessions_per_item, order, following.scale,
                algorithms.top_n, threads, *lists_of(1),
            )  # fmt: skip

    seconds["follows_rank"], _ = best(options.rounds, rank_follows)
    pairs_total = seconds["pairs_count"] + seconds["pairs_rank"]
    follows_total = seconds["follows_count"] + seconds["follows_rank"]
    print(
        json.dumps(
            {
                "events": options.events,
                "sessions": len(lists),
                "items": n_items,
                "pairs": counted.pairs,
                "follow_pairs": {name: rows.pairs for name, rows in follows.items()},
                "threads": threads,
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
                "follows/pairs": round(follows_total / pairs_total, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
