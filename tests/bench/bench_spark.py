"""Benchmark: ``etalage build --engine spark`` (local mode) against the DuckDB engine, at 1M and 5M events.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_spark.py              # 1M and 5M events
    .venv/bin/python tests/bench/bench_spark.py --sizes 1M   # just one size

The shops are those of ``bench_build.py`` (180,000 products, Parquet events,
cached under ``bench-data/``; generated when missing). Each build runs in a
fresh process, in this order: DuckDB with the Numba kernel (the default),
DuckDB with the SQL self-join (``--pairs sql``: the same SQL that Spark runs),
and Spark in local mode with ``--master local[N]`` (N = the machine's cores),
a 4 GiB driver and etalage's defaults. Every build includes the evaluation
(the last 10 of 28 days held out), as in ``bench_build.py``.

Memory is the peak resident size of the whole process tree, sampled every
0.1 s from ``/proc`` by this parent process: for Spark that is the Python
driver plus the JVM it starts. Times are wall-clock; Spark's includes starting
the JVM, which is reported on its own too. The machine is shared and noisy,
so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_build  # the shops and the DuckDB build measurement

ROOT = bench_build.ROOT
ITEM_STAGE = (
    "session_items",
    "item_counts",
    "tenant_sessions",
    "kernel",
    "pair_counts",
    "ranked_pairs",
    "popular",
    "itemitem",
)


def run_spark(folder: Path, master: str) -> dict:
    """One Spark build of the shop in this process; the JVM start is timed on its own."""
    from msgspec.structs import replace

    from engine import config
    from engine.spark import runner

    cfg = config.load(folder / "etalage.toml")
    cfg = replace(cfg, evaluation=config.Evaluation(test_days=10))
    begin = time.perf_counter()
    spark = runner.session(master)
    started = time.perf_counter() - begin
    result = runner.build(cfg, folder / "spark-tables", spark=spark)
    total = time.perf_counter() - begin
    spark.stop()
    return {"total": total, "jvm_start": started, "seconds": result.seconds, "rows": result.rows}


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            statm = Path(f"/proc/{entry}/statm").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
        rss[int(entry)] = int(statm.split()[1]) * page
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measured(*args: str, timeout: float = 3600) -> dict | None:
    """Run one measurement in a fresh interpreter; add the peak RSS of its process tree (GiB)."""
    process = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return None
    sampler.join()
    if process.returncode != 0:
        print(f"    ({' '.join(args[:2])} failed: {err.strip().splitlines()[-1:]})", flush=True)
        return None
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_gib"] = peak[0] / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,5M")
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--master", default=f"local[{os.cpu_count()}]")
    options = parser.parse_args()

    lines = [
        f"{'events':>7} {'measure':<40}{'duckdb':>10}{'duck sql':>10}{'spark':>10}{'spark/duckdb':>14}{'spark/sql':>11}"
    ]
    for label in options.sizes.split(","):
        folder = options.data / f"shop-{label}"
        if not (folder / "etalage.toml").exists():
            print(f"generating {label} events into {folder} ...", flush=True)
            subprocess.run(
                [sys.executable, bench_build.__file__, "_generate", str(folder), str(bench_build.SIZES[label])],
                check=True,
                cwd=ROOT,
            )
        print(f"{label}: DuckDB, kernel ...", flush=True)
        kernel = measured("_duckdb", str(folder), "kernel")
        print(f"{label}: DuckDB, SQL self-join ...", flush=True)
        sql = measured("_duckdb", str(folder), "sql")
        print(f"{label}: Spark, {options.master} ...", flush=True)
        spark = measured("_spark", str(folder), options.master)

        def stage(result: dict | None, steps: tuple[str, ...]) -> float | None:
            return sum(result["seconds"].get(s, 0.0) for s in steps) if result else None

        def holdout(result: dict | None) -> float | None:
            return sum(v for k, v in result["seconds"].items() if k.startswith("evaluation")) if result else None

        rows = [
            ("whole build (s)", *(r and r["total"] for r in (kernel, sql, spark))),
            ("  of which Spark's JVM start (s)", None, None, spark and spark["jvm_start"]),
            ("  events from Parquet (s)", *(stage(r, ("events",)) for r in (kernel, sql, spark))),
            ("  item-item stage into itemitem (s)", *(stage(r, ITEM_STAGE) for r in (kernel, sql, spark))),
            ("  evaluation (s)", *(holdout(r) for r in (kernel, sql, spark))),
            ("peak memory, process tree (GiB)", *(r and r["tree_peak_gib"] for r in (kernel, sql, spark))),
        ]
        for name, duck, join, ours in rows:
            lines.append(
                f"{label:>7} {name:<40}{bench_build._num(duck):>10}{bench_build._num(join):>10}{bench_build._num(ours):>10}"
                f"{bench_build._ratio(ours, duck):>14}{bench_build._ratio(ours, join):>11}"
            )
        if spark:
            lines.append(f"{'':>7} spark steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in spark["seconds"].items()))
            same = kernel and kernel["rows"].get("itemitem") == spark["rows"].get("itemitem")
            lines.append(
                f"{'':>7} itemitem rows: spark {spark['rows'].get('itemitem'):,}, duckdb "
                f"{kernel and kernel['rows'].get('itemitem'):,} ({'same' if same else 'DIFFERENT'})"
            )
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        command, *rest = sys.argv[1:]
        if command == "_duckdb":
            name = "warehouse.duckdb" if rest[1] == "kernel" else "warehouse-sql.duckdb"
            print(json.dumps(bench_build.run_build(Path(rest[0]), rest[1], name)))
        elif command == "_spark":
            print(json.dumps(run_spark(Path(rest[0]), rest[1])))
    else:
        main()
