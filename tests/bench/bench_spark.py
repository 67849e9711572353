"""Benchmark: events to a published snapshot on Spark, in local mode and on a one-host cluster, against DuckDB.

Run it from the repository root (it is not collected by pytest)::

    .venv/bin/python tests/bench/bench_spark.py              # 1M and 5M events
    .venv/bin/python tests/bench/bench_spark.py --sizes 1M   # just one size

The shops are ``bench_build.py``'s (``bench-data/build-1M``, ...; generated
when missing), with the example config: the last 7 days held out and scored.
Each contender goes from the same Parquet events to a live snapshot, every
command a fresh process, as an operator runs them:

* ``duckdb``: ``etalage build --full``, which publishes itself;
* ``spark local``: ``etalage build --engine spark --master local[N]`` (N: this
  machine's cores), then ``etalage publish --from`` its output;
* ``spark cluster``: the same with ``--master spark://127.0.0.1:PORT``: a
  standalone master and one worker (every core, 8 GiB) started for the run
  from pyspark's own jars, as ``tests/test_spark_cluster.py`` starts them.

The Spark contenders publish into a warehouse and a snapshots folder of
their own (``spark.toml``), so the DuckDB build's are left alone. Each
command's output, with its steps' times, is kept beside the shop
(``bench-*.log``). Memory is
the peak resident size of each command's process tree, sampled every 0.1 s
from ``/proc``: for Spark the Python driver and its JVM (a cluster's daemons
and executors are not in that tree). The machine is shared and noisy, so
read the ratios; each published snapshot's ``itemitem`` rows are compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_build  # the shops

from tests import spark_cluster  # the one-host cluster, as tests/test_spark_cluster.py starts it

ROOT = bench_build.ROOT
ETALAGE = [sys.executable, "-m", "engine"]
SPARK_ENV = {"PYSPARK_PYTHON": sys.executable, **spark_cluster.LOOPBACK}
CLUSTER_MEMORY = {"PYSPARK_SUBMIT_ARGS": "--driver-memory 4g --executor-memory 6g pyspark-shell"}
"""What an operator passes to spark-submit for the cluster: local mode's 4 GiB driver, and an executor of 6 GiB
(with Spark's default of 1 GiB the executor shut down midway at 1M events)."""


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


def measured(command: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``command`` as a fresh process tree, its output (the steps' times) in ``log``; its wall time and the tree's peak resident memory (GiB)."""
    begin = time.perf_counter()
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **SPARK_ENV, **(env or {})}
        )
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss(process.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    process.wait()
    seconds = time.perf_counter() - begin
    sampler.join()
    if process.returncode != 0:
        msg = f"{' '.join(command)} failed (see {log}): {log.read_text()[-2000:]}"
        raise RuntimeError(msg)
    return {"seconds": seconds, "peak_gib": peak[0] / 2**30}


def spark_config(folder: Path) -> Path:
    """The shop's config with a warehouse and a snapshots folder of its own, for the Spark builds to publish into."""
    text = (folder / "etalage.toml").read_text()
    for old, new in (
        ('path = "warehouse.duckdb"', 'path = "spark.duckdb"'),
        ('root = "snapshots"', 'root = "spark-snapshots"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    (folder / "spark.toml").write_text(text)
    return folder / "spark.toml"


def on_spark(folder: Path, master: str, name: str, env: dict[str, str]) -> dict:
    """``etalage build --engine spark`` on ``master``, then ``etalage publish`` of its output; both measured."""
    config = spark_config(folder)
    output = folder / "spark-output"
    shutil.rmtree(output, ignore_errors=True)
    logs = folder / f"bench-{name.replace(' ', '-')}"
    build = measured(
        [*ETALAGE, "build", "--engine", "spark", "--master", master, "--config", str(config), "--output", str(output)],
        logs.with_suffix(".build.log"),
        env,
    )
    publish = measured(
        [*ETALAGE, "publish", "--from", str(output), "--force", "--config", str(config)],
        logs.with_suffix(".publish.log"),
    )
    return {"build": build, "publish": publish, "rows": served_rows(folder / "spark-snapshots")}


def served_rows(root: Path) -> int:
    """The ``itemitem`` rows of the live snapshot under ``root``."""
    return json.loads((root / "current" / "manifest.json").read_text())["rows"]["itemitem"]


@contextlib.contextmanager
def standalone_cluster() -> Iterator[str]:
    """A standalone master and one worker (every core, 8 GiB) on loopback ports until the block ends; its URL."""
    folder = Path(tempfile.mkdtemp(prefix="etalage-bench-cluster-"))
    try:
        with spark_cluster.standalone(folder, cores=os.cpu_count() or 1, memory="8g") as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,5M")
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    options = parser.parse_args()
    local = f"local[{os.cpu_count()}]"
    for label in options.sizes.split(","):
        folder = options.data / f"build-{label}"
        if not (folder / "etalage.toml").exists():
            print(f"generating {label} events into {folder} ...", flush=True)
            bench_build.generate(folder, bench_build.SIZES[label])
        print(f"{label}: duckdb ...", flush=True)
        duckdb = measured(
            [*ETALAGE, "build", "--full", "--config", str(folder / "etalage.toml")], folder / "bench-duckdb.build.log"
        )
        duckdb_rows = served_rows(folder / "snapshots")
        print(f"{label}  {'duckdb':<14} build {duckdb['seconds']:7.1f} s ({duckdb['peak_gib']:.2f} GiB)", flush=True)
        contenders = {
            "spark local": (contextlib.nullcontext(local), {}),
            "spark cluster": (standalone_cluster(), CLUSTER_MEMORY),
        }
        for name, (master, env) in contenders.items():
            print(f"{label}: {name} ...", flush=True)
            try:
                with master as url:
                    result = on_spark(folder, url, name, env)
            except RuntimeError as error:  # one contender's failure is a result too; the others still run
                print(f"{label}  {name:<14} failed: {str(error)[-600:]}", flush=True)
                continue
            total = result["build"]["seconds"] + result["publish"]["seconds"]
            print(
                f"{label}  {name:<14} build {result['build']['seconds']:7.1f} s ({result['build']['peak_gib']:.2f} GiB), "
                f"publish {result['publish']['seconds']:6.1f} s ({result['publish']['peak_gib']:.2f} GiB), "
                f"total {total:7.1f} s: {total / duckdb['seconds']:.1f}x duckdb; "
                f"itemitem rows {result['rows']:,} ({'same' if result['rows'] == duckdb_rows else 'DIFFERENT'})",
                flush=True,
            )


if __name__ == "__main__":
    main()
