"""Benchmark: whole ``etalage build`` processes against a plain DuckDB script, and the hourly rebuild.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_build.py                 # 1M, 5M and 20M events
    .venv/bin/python tests/bench/bench_build.py --sizes 1M --rounds 5

For each size it generates a shop once (cached under ``bench-data/``: 180,000
products, 3 tenants, 28 days of Divolte events as daily Parquet files, the
last hour of the last day in a file of its own), then times whole processes,
each started fresh, alternating the contenders round by round so that the
shared machine's slow spells hit them alike:

* ``plain``: ``tests/bench/plain_llr.sql`` run by DuckDB alone: session items,
  the self-join, the LLR, the top 20 written to Parquet (what an analyst
  would write without etalage);
* ``lean``: ``etalage build --full`` doing the plain script's work: its LLR
  lists alone (``algorithms.compute``), by its rules, the evaluation off;
  the first round checks that both wrote the same rows;
* ``default``: ``etalage build --full`` with the example config (the last 7
  days held out and scored);
* ``hourly``: after a build of everything but the last hour, the last hour's
  file arrives and ``etalage build`` runs (incremental, evaluation on); the
  state before it is put back for every round.

It prints, per size, each contender's median, minimum and maximum wall time
and peak memory (the process's maximum resident set), and the ratios of the
medians: lean and default against plain, hourly against default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = {"1M": 1_000_000, "5M": 5_000_000, "20M": 20_000_000}
PLAIN = Path(__file__).with_name("plain_llr.sql")
STATE = ("warehouse.duckdb", "warehouse.store", "snapshots")
"""What a build leaves in a shop folder: saved after the base build and put back before each hourly round."""


def generate(folder: Path, events: int) -> None:
    """A shop whose newest hour's worth of events is a file of its own, outside the events glob until an hourly round.

    An hour's worth is the average hour's share of 28 days (1/672 of the
    events), taken from the newest end of the clickstream.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from engine import config
    from engine.example import generator

    spec = generator.ShopSpec(products=180_000, brands=1_850, events=events, days=28, seed=1)
    generator.write_shop(generator.generate(spec), folder, ("parquet",), images=False)
    files = sorted((folder / "events" / "parquet").glob("date=*/*.parquet"))
    times = np.sort(np.concatenate([pq.read_table(f, columns=["timestamp"])["timestamp"].to_numpy() for f in files]))
    cut = times[-(times.size // (28 * 24))]
    hour = []
    for path in files:
        day = pq.read_table(path)
        newest = pc.greater_equal(day["timestamp"], pa.scalar(cut, day.schema.field("timestamp").type))
        if pc.any(newest).as_py():
            hour.append(day.filter(newest))
            pq.write_table(day.filter(pc.invert(newest)), path)
    (folder / "last-hour").mkdir()
    pq.write_table(pa.concat_tables(hour), folder / "last-hour" / "events.parquet")
    (folder / "etalage.toml").write_text(config.example_toml("parquet"))


def lean_toml() -> str:
    """The example config at its leanest, doing the plain script's work: its LLR lists alone, by its rules.

    No evaluation and no fallback list; sessions of at most 50 products and
    no views-per-minute rule, as ``plain_llr.sql`` has them.
    """
    from engine import config

    lean = config.example_toml("parquet")
    for old, new in (
        ("test_days = 7", "test_days = 0"),
        ('gate_algorithm = "auto"', 'gate_algorithm = "llr"'),
        ("top_n = 20", 'compute = ["llr"]\ntop_n = 20'),
        ("max_session_items = 200", "max_session_items = 50"),
        ("max_views_per_minute = 30", "max_views_per_minute = 0"),
        ('fallback = "popular"', 'fallback = ""'),
    ):
        assert old in lean, old
        lean = lean.replace(old, new)
    return lean[: lean.rindex("[[experiment.variants]]")]  # the llr variant alone


def timed(command: list[str], cwd: Path) -> dict:
    """Run ``command`` as a fresh process; its wall time and peak resident memory (GiB)."""
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - begin
    stderr = process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        msg = f"{' '.join(command)} failed: {stderr[-2000:]}"
        raise RuntimeError(msg)
    return {"seconds": seconds, "peak_gib": usage.ru_maxrss / 2**20, "log": stderr}


def contenders(folder: Path) -> dict[str, list[str]]:
    etalage = [sys.executable, "-m", "engine", "build", "--full", "--force"]
    return {
        "plain": [sys.executable, __file__, "_plain", str(folder)],
        "lean": [*etalage, "--config", str(folder / "lean.toml")],
        "default": [*etalage, "--config", str(folder / "etalage.toml")],
    }


def hourly(folder: Path, saved: Path) -> dict:
    """One hourly round: the state after the base build put back, the last hour arriving, one build."""
    for name in STATE:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        source = saved / name
        shutil.copytree(source, target, symlinks=True) if source.is_dir() else shutil.copy2(source, target)
    arrived = folder / "events" / "parquet" / "date=9999-last-hour"
    arrived.mkdir(exist_ok=True)
    shutil.copy2(folder / "last-hour" / "events.parquet", arrived / "events.parquet")
    try:
        return timed(
            [sys.executable, "-m", "engine", "build", "--force", "--config", str(folder / "etalage.toml")], folder
        )
    finally:
        shutil.rmtree(arrived)


def run_plain(folder: Path) -> None:
    """The baseline script, as the benchmark times it (in a process of its own)."""
    import duckdb

    connection = duckdb.connect()
    values = {
        "events": str(folder / "events" / "parquet" / "**" / "*.parquet"),
        "catalogue": str(folder / "catalogue.parquet"),
        "output": str(folder / "plain-llr.parquet"),
    }
    for statement in connection.extract_statements(PLAIN.read_text()):
        connection.execute(statement.query, {name: v for name, v in values.items() if f"${name}" in statement.query})


def same_lists(folder: Path) -> int:
    """Check that the plain script wrote the lean build's ``llr`` rows (scores to 1e-9 relative); return their number."""
    import math

    import duckdb

    from engine.publish import warehouse

    columns = "tenant, product_id, CAST(rank AS INTEGER), related_product_id, distance_score"
    with contextlib.chdir(folder), warehouse.connect(Path("warehouse.duckdb"), read_only=True) as connection:
        built = connection.execute(f"SELECT {columns} FROM itemitem WHERE algorithm = 'llr' ORDER BY ALL").fetchall()
    plain = duckdb.execute(
        f"SELECT {columns} FROM read_parquet($path) ORDER BY ALL", {"path": str(folder / "plain-llr.parquet")}
    ).fetchall()
    differ = [
        (a, b)
        for a, b in zip(built, plain, strict=False)
        if a[:4] != b[:4] or not math.isclose(a[4], b[4], rel_tol=1e-9)
    ]
    if len(built) != len(plain) or differ:
        msg = f"the plain script's lists differ: {len(plain):,} rows against {len(built):,}; first: {differ[:3]}"
        raise RuntimeError(msg)
    return len(built)


def summary(name: str, runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {
        "contender": name,
        "median_s": round(statistics.median(seconds), 2),
        "min_s": round(min(seconds), 2),
        "max_s": round(max(seconds), 2),
        "peak_gib": round(max(r["peak_gib"] for r in runs), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,5M,20M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    options = parser.parse_args()
    for label in options.sizes.split(","):
        folder = options.data / f"build-{label}"
        if not (folder / "etalage.toml").exists():
            print(f"generating {label} events into {folder} ...", flush=True)
            subprocess.run(
                [sys.executable, __file__, "_generate", str(folder), str(SIZES[label])], check=True, cwd=ROOT
            )
        (folder / "lean.toml").write_text(lean_toml())  # written each run: a cached shop may hold an older one
        runs: dict[str, list[dict]] = {"plain": [], "lean": [], "default": [], "hourly": []}
        saved = folder / "saved-state"
        for number in range(options.rounds):
            for name, command in contenders(folder).items():
                runs[name].append(timed(command, ROOT))
                print(f"{label} round {number + 1}: {name} {runs[name][-1]['seconds']:.2f} s", flush=True)
                if name == "lean" and number == 0:
                    print(f"{label}: the plain script's {same_lists(folder):,} rows are lean's llr rows", flush=True)
            if number == 0:  # the default build of everything but the last hour is the hourly rounds' base
                shutil.rmtree(saved, ignore_errors=True)
                saved.mkdir()
                for name in STATE:
                    source = folder / name
                    shutil.copytree(source, saved / name, symlinks=True) if source.is_dir() else shutil.copy2(
                        source, saved / name
                    )
            runs["hourly"].append(hourly(folder, saved))
            print(f"{label} round {number + 1}: hourly {runs['hourly'][-1]['seconds']:.2f} s", flush=True)
        rows = [summary(name, r) for name, r in runs.items()]
        medians = {row["contender"]: row["median_s"] for row in rows}
        ratios = {
            "lean/plain": round(medians["lean"] / medians["plain"], 2),
            "default/plain": round(medians["default"] / medians["plain"], 2),
            "hourly/default": round(medians["hourly"] / medians["default"], 2),
        }
        steps = [line.strip() for line in runs["default"][-1]["log"].splitlines() if "✓" in line]
        hour_steps = [line.strip() for line in runs["hourly"][-1]["log"].splitlines() if "✓" in line]
        print(json.dumps({"size": label, "rows": rows, "ratios": ratios}), flush=True)
        print("default build's steps (last round):\n  " + "\n  ".join(steps), flush=True)
        print("hourly build's steps (last round):\n  " + "\n  ".join(hour_steps), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        command, *rest = sys.argv[1:]
        if command == "_generate":
            generate(Path(rest[0]), int(rest[1]))
        elif command == "_plain":
            run_plain(Path(rest[0]))
    else:
        main()
