"""Shared fixtures: a small generated shop on disk, and helpers to write hand-made Divolte events."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from msgspec.structs import replace

from engine import config
from engine.example import generator
from engine.ingest import divolte
from tests.spark_cluster import free_port  # a loopback port free now (defined there: benchmarks use it without pytest)

SMALL_SHOP = generator.ShopSpec(products=800, brands=60, events=30_000, days=14, seed=11)


@pytest.fixture(scope="session")
def small_shop(tmp_path_factory) -> Path:
    """A small generated shop with both Avro and Parquet copies of its events (read-only for tests)."""
    folder = tmp_path_factory.mktemp("shop")
    generator.write_shop(generator.generate(SMALL_SHOP), folder)
    (folder / "etalage.toml").write_text(config.example_toml())
    return folder


@pytest.fixture(scope="session")
def built_small_shop(small_shop, tmp_path_factory) -> Path:
    """The small shop's Avro events and catalogue, built once by ``etalage build`` (read-only: ``copy_built`` it)."""
    folder = tmp_path_factory.mktemp("built-shop")
    result = run_cli("build", "--config", str(copy_shop(small_shop, folder)))
    assert result.returncode == 0, result.stderr
    return folder


VISUAL_SHOP = generator.ShopSpec(products=150, brands=20, events=12_000, days=14, seed=5)


@pytest.fixture(scope="session")
def visual_shop(tmp_path_factory) -> Path:
    """A small shop with ``[visual] enabled``, built once with the real encoder (read-only for tests; copy to change it)."""
    folder = tmp_path_factory.mktemp("visual-shop")
    generator.write_shop(generator.generate(VISUAL_SHOP), folder, ("avro",))
    (folder / "etalage.toml").write_text(config.example_toml(visual=True))
    from engine import build

    build.build(config.load(folder / "etalage.toml"))
    return folder


def tenant_products(catalogue: pa.Table, tenant: str) -> set[str]:
    """The product ids a catalogue sells in ``tenant``."""
    return {
        p
        for t, p in zip(catalogue.column("tenant").to_pylist(), catalogue.column("product_id").to_pylist(), strict=True)
        if t == tenant
    }


def run_cli(
    *args: str, cwd: Path | None = None, environment: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess:
    """Run ``etalage`` in a real subprocess, as cron would, with ``environment`` changing ours (None unsets).

    Its tables are printed for a terminal 200 columns wide unless ``environment`` names ``COLUMNS``: the width of
    the terminal pytest runs in (none under pytest-xdist) must not change what a test reads.
    """
    env = {**os.environ, "COLUMNS": "200"}
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [sys.executable, "-m", "engine", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def divolte_events(rows: list[dict]) -> pa.Table:
    """Divolte records from short dicts: tenant, session, product (None for a non-product page) and optional flags."""
    start = dt.datetime(2026, 11, 1, 12, 0)
    records = []
    for i, row in enumerate(rows):
        tenant = row.get("tenant", "nl")
        product = row.get("product")
        path = f"p/{product}/dress/" if product else "c/dress/"
        when = row.get("ts", start + dt.timedelta(seconds=i))
        records.append(
            {
                "detectedDuplicate": row.get("duplicate", False),
                "detectedCorruption": row.get("corrupt", False),
                "firstInSession": False,
                "timestamp": when,
                "clientTimestamp": when,
                "remoteHost": "203.0.113.1",
                "location": f"https://www.etalage.{tenant}/{path}",
                "partyId": f"0:{row['session']}",
                "sessionId": f"0:{row['session']}",
                "pageViewId": f"0:p{i}",
                "eventType": row.get("type", "pageView"),
            }
        )
    return pa.Table.from_pylist(records, schema=divolte.ARROW_SCHEMA)


def catalogue(products: dict[str, list[str]]) -> pa.Table:
    """A catalogue with the given product ids per tenant."""
    rows = [
        {
            "tenant": tenant,
            "product_id": product,
            "title": f"item {product}",
            "brand": "b",
            "category": "dress",
            "colour": "red",
            "price": 10.0,
        }
        for tenant, ids in products.items()
        for product in ids
    ]
    return pa.Table.from_pylist(rows)


def write_shop_folder(folder: Path, events: pa.Table, products: dict[str, list[str]], algorithms: str = "") -> Path:
    """Write hand-made events (as Avro and Parquet), a catalogue and an etalage.toml; return the config path."""
    divolte.write_avro(events, folder / "events" / "avro" / "2026" / "11" / "01" / "12" / "part-0.avro")
    divolte.write_parquet(events, folder / "events" / "parquet" / "part-0.parquet")
    pq.write_table(catalogue(products), folder / "catalogue.parquet")
    toml = f"""
[warehouse]
path = "warehouse.duckdb"
[catalogue]
path = "catalogue.parquet"
[events]
avro = ["events/avro/**/*.avro"]
[algorithms]
{algorithms}
"""
    (folder / "etalage.toml").write_text(toml)
    return folder / "etalage.toml"


def shop_config(shop: Path, folder: Path, **changes) -> config.Config:
    """The shop's config with its warehouse and snapshots moved into ``folder``, so the shared shop stays read-only."""
    cfg = config.load(shop / "etalage.toml")
    snapshots = replace(cfg.snapshots, root=folder / "snapshots")
    return replace(cfg, warehouse=folder / "warehouse.duckdb", snapshots=snapshots, **changes)


def copy_built(shop: Path, folder: Path) -> Path:
    """Copy a built shop folder whole (config, events, warehouse, store, snapshots) into ``folder``; return ``folder``.

    Cheaper than building again: a module-scoped fixture builds once and each test takes a copy. The warehouse names
    its store files by their paths from its own folder, and ``current`` is a relative link, so the copy is a shop of
    its own; only its views read the original's store files (the same bytes) until its first build writes them anew,
    so the original must not change (no test gets it, only copies).
    """
    shutil.copytree(shop, folder, symlinks=True, dirs_exist_ok=True)
    return folder


def copy_shop(shop: Path, folder: Path) -> Path:
    """Copy the shop's catalogue, config and Avro events into ``folder`` (to build there); return the config path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("catalogue.parquet", "etalage.toml"):
        shutil.copy(shop / name, folder / name)
    shutil.copytree(shop / "events" / "avro", folder / "events" / "avro")
    return folder / "etalage.toml"


def served_rows(folder: Path) -> pa.Table:
    """What a snapshot serves, list by list in lists.arrow's order, whichever parts and runs hold it.

    One row per served item: the list's algorithm, tenant and product, then
    the item's rank, score and JSON as the parts hold them.
    """
    from engine.publish import snapshot

    manifest = json.loads((folder / snapshot.MANIFEST).read_text())
    rows = pa.concat_tables(snapshot.read_table(folder / name) for name in snapshot.parts(manifest))
    lists = snapshot.read_table(folder / "lists.arrow")
    lists = lists.filter(pc.greater(lists.column("rows"), 0))
    count = lists.column("rows").to_numpy().astype(np.int64)
    ends = np.cumsum(count)
    taken = rows.take(
        np.arange(ends[-1] if ends.size else 0)
        + np.repeat(lists.column("first_row").to_numpy() - (ends - count), count)
    )
    keys = lists.select(["algorithm", "tenant", "product_id"]).take(np.repeat(np.arange(lists.num_rows), count))
    return pa.Table.from_arrays([*keys.columns, *taken.columns], names=[*keys.column_names, *taken.column_names])


def tiny_tables(
    first_row: int = 0,
    rows: int = 2,
    score: float = 1.0,
    comma: str = ",",
    product: str = "1",
    ranks: tuple[int, int] = (1, 2),
    second: tuple[int, int] = (0, 0),
) -> dict:
    """A snapshot's tables by hand (for ``engine.publish.snapshot.stage``): ``product`` has two llr neighbours, product 2 none.

    The other arguments let a test spoil one thing the verifier checks; ``ranks`` are the two neighbours' ranks,
    ``second`` product 2's (first_row, rows).
    """
    itemitem = pa.table(
        {
            "tenant": ["nl", "nl"],
            "algorithm": ["llr", "llr"],
            "product_id": [product, product],
            "rank": pa.array(ranks, pa.int32()),
            "related_product_id": ["2", "3"],
            "distance_score": [score, 0.5],
            "item_json": [
                f'{{"product_id":"2","rank":1,"score":{score}}}{comma}',
                '{"product_id":"3","rank":2,"score":0.5},',
            ],
        }
    )
    lists = pa.table(
        {
            "algorithm": ["llr", "llr"],
            "tenant": ["nl", "nl"],
            "product_id": [product, "2"],
            "first_row": pa.array([first_row, second[0]], pa.int64()),
            "rows": pa.array([rows, second[1]], pa.int32()),
        }
    )
    products = pa.table({"tenant": ["nl", "nl"], "product_id": [product, "2"]})
    return {"itemitem": itemitem.to_reader, "lists": lists.to_reader, "products": products.to_reader}


@contextlib.contextmanager
def running_server(config_path: Path, workers: int = 2) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``etalage serve`` in a real process on a loopback port until the block ends; yield its URL and process."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--config",
            str(config_path),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited: {process.stderr.read()}"
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            try:
                if urllib.request.urlopen(f"{base}/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)
