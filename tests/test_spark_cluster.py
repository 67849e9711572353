"""A real Spark standalone cluster on 127.0.0.1: build on it, publish, serve, and get the DuckDB build's lists.

The master and a worker are started from pyspark's own jars with
``spark-class``, as an operator starts them, and the build runs as a cluster
application (``--master spark://...``). The small shop's Parquet events are
read, since Avro on a cluster needs spark-avro (a test checks the error).
Skipped, saying why, where pyspark or Java is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec.structs import replace

pyspark = pytest.importorskip(
    "pyspark", reason="pyspark is not installed: pip install -e '.[spark]' (the test extra has it)"
)
if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
    pytest.skip("no Java on this machine: a Spark cluster needs Java 17 or newer", allow_module_level=True)

from engine import build, config  # noqa: E402
from engine.publish import warehouse  # noqa: E402
from tests import spark_cluster  # noqa: E402
from tests.conftest import run_cli, running_server  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """A standalone master and one worker (2 cores, 2 GiB) on loopback ports; yields the master's URL."""
    with spark_cluster.standalone(tmp_path_factory.mktemp("cluster"), cores=2, memory="2g") as url:
        yield url


@pytest.fixture(scope="module")
def parquet_shop(small_shop, tmp_path_factory) -> Path:
    """The small shop's config reading its Parquet copy of the events, in a folder of its own."""
    folder = tmp_path_factory.mktemp("parquet-shop")
    for name in ("catalogue.parquet", "events"):
        source = small_shop / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / name)
    text = (small_shop / "etalage.toml").read_text()
    text = text.replace('avro = ["events/avro/**/*.avro"]', 'parquet = ["events/parquet/**/*.parquet"]')
    (folder / "etalage.toml").write_text(text)
    return folder / "etalage.toml"


def spark_build(cluster: str, config_path: Path, output: Path, timeout: int) -> subprocess.CompletedProcess:
    """``etalage build --engine spark`` on the cluster, as a user runs it (its executors use this Python)."""
    command = ["build", "--engine", "spark", "--master", cluster, "--config", str(config_path), "--output", str(output)]
    return subprocess.run(
        [sys.executable, "-m", "engine", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        check=False,
    )


def test_a_build_on_a_standalone_cluster_publishes_and_serves_the_duckdb_lists(cluster, parquet_shop, tmp_path):
    output = tmp_path / "spark-output"
    built = spark_build(cluster, parquet_shop, output, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    assert f"on Spark ({cluster})" in built.stderr
    published = run_cli("publish", "--from", str(output), "--config", str(parquet_shop))
    assert published.returncode == 0, published.stderr
    build_id = json.loads((output / "_SUCCESS").read_text())["build_id"]
    assert f"took in build {build_id}" in published.stderr

    duck = config.load(parquet_shop)
    duck = replace(
        duck,
        warehouse=tmp_path / "duck" / "warehouse.duckdb",
        snapshots=replace(duck.snapshots, root=tmp_path / "duck" / "snapshots"),
    )
    build.build(duck)
    with warehouse.connect(duck.warehouse, read_only=True) as connection:
        lists = connection.execute(
            "SELECT tenant, algorithm, product_id, list(related_product_id ORDER BY rank) FROM itemitem "
            "WHERE algorithm IN ('cooccurrence', 'jaccard', 'popular') GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert len(lists) > 1000
    with running_server(parquet_shop) as (base, _):
        for tenant, algorithm, product, related in lists[:: len(lists) // 200]:
            query = urllib.parse.urlencode({"algorithm": algorithm, "limit": 100})
            url = f"{base}/v1/{tenant}/products/{urllib.parse.quote(product)}/recommendations?{query}"
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.load(answer)
            assert body["snapshot"] == build_id
            assert [item["product_id"] for item in body["items"]] == related, (tenant, algorithm, product)


def test_avro_on_a_cluster_without_spark_avro_is_refused_at_start(cluster, small_shop, tmp_path):
    result = spark_build(cluster, small_shop / "etalage.toml", tmp_path / "out", timeout=600)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"events.avro on a cluster ({cluster}) needs Spark's Avro reader" in result.stderr
    assert not (tmp_path / "out").exists()
