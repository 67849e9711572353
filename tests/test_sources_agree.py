"""The same recommendations whichever file format the events come in and whichever engine counts pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
from msgspec.structs import replace

from engine import build
from engine.config import CLICK_ALGORITHMS
from engine.pipeline import evaluation
from engine.publish import warehouse
from tests.conftest import shop_config


def built(shop: Path, target: Path, *, source: str, pairs: str) -> Path:
    cfg = shop_config(shop, target)
    events = replace(cfg.events, avro=(), parquet=())
    events = replace(events, **{source: (str(shop / "events" / source / "**" / f"*.{source}"),)})
    cfg = replace(cfg, events=events)
    build.build(cfg, pairs=pairs)
    return cfg.warehouse


@pytest.fixture(scope="module")
def warehouses(small_shop, tmp_path_factory):
    folder = tmp_path_factory.mktemp("agree")
    return {
        (source, pairs): built(small_shop, folder / f"{source}-{pairs}", source=source, pairs=pairs)
        for source, pairs in [("avro", "kernel"), ("parquet", "kernel"), ("avro", "sql")]
    }


def differences(left: Path, right: Path, table: str) -> tuple[int, int, int]:
    connection = warehouse.connect()
    connection.execute(f"ATTACH '{left}' AS l (READ_ONLY)")
    connection.execute(f"ATTACH '{right}' AS r (READ_ONLY)")
    only_left = connection.execute(f"SELECT count(*) FROM (FROM l.{table} EXCEPT ALL FROM r.{table})").fetchone()[0]
    only_right = connection.execute(f"SELECT count(*) FROM (FROM r.{table} EXCEPT ALL FROM l.{table})").fetchone()[0]
    total = connection.execute(f"SELECT count(*) FROM l.{table}").fetchone()[0]
    return only_left, only_right, total


@pytest.mark.slow
@pytest.mark.parametrize("table", ["events", "session_items", "item_counts", "itemitem"])
def test_avro_and_parquet_copies_give_the_same_tables(warehouses, table):
    only_avro, only_parquet, total = differences(warehouses["avro", "kernel"], warehouses["parquet", "kernel"], table)
    assert total > 1000
    assert (only_avro, only_parquet) == (0, 0)


@pytest.mark.slow
def test_kernel_and_sql_self_join_give_the_same_itemitem(warehouses):
    only_kernel, only_sql, total = differences(warehouses["avro", "kernel"], warehouses["avro", "sql"], "itemitem")
    assert total > 10_000
    assert (only_kernel, only_sql) == (0, 0)


@pytest.mark.slow
def test_every_algorithm_is_present_with_full_lists(warehouses):
    with warehouse.connect(warehouses["avro", "kernel"], read_only=True) as connection:
        rows = dict(connection.execute("SELECT algorithm, max(rank) FROM itemitem GROUP BY algorithm").fetchall())
    assert rows == dict.fromkeys(CLICK_ALGORITHMS, 20)


@pytest.mark.slow
def test_kernel_and_sql_score_alike_on_the_example_shop(warehouses):
    """Every evaluation row, the session route's blend (``sql/visit_lists.sql`` and its kernel) included."""
    scored = {}
    for pairs in ("kernel", "sql"):
        with warehouse.connect(warehouses["avro", pairs], read_only=True) as connection:
            rows = connection.table("evaluation").to_arrow_table().to_pylist()
        scored[pairs] = {row["algorithm"]: row for row in rows}
    kernel, sql = scored["kernel"], scored["sql"]
    assert set(kernel) == set(sql) == set(evaluation.SCORED)
    assert kernel[evaluation.VISIT]["pairs"] > 5_000
    for algorithm, row in kernel.items():
        for column in ("sessions", "pairs", "compared_with"):
            assert sql[algorithm][column] == row[column], (algorithm, column)
        for column in evaluation.COLUMNS[4:] + list(evaluation.INTERVALS[1:]):
            assert sql[algorithm][column] == pytest.approx(row[column], rel=1e-12, abs=1e-15), (algorithm, column)
