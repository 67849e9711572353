"""``sql/`` in Spark SQL: every file transpiles, the rewrites hold, and the LLR expression is Mahout's arithmetic.

These need sqlglot and DuckDB only; tests/test_spark.py runs the results on Spark.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
import sqlglot

from engine import sqlfiles
from engine.publish import warehouse
from engine.spark import transpile
from engine.udfs.llr import llr
from tests.conftest import run_cli

SPARK_FILES = [name for name in sqlfiles.names() if name not in transpile.DUCKDB_ONLY]


@pytest.mark.parametrize("name", SPARK_FILES)
def test_every_file_transpiles_with_its_parameters_as_spark_markers(name):
    text = transpile.spark_sql(name)
    code = "\n".join(re.sub(r"/\*.*?\*/", "", line) for line in text.splitlines())
    assert "$" not in code
    assert set(re.findall(r":([a-z_]+)\b", code)) == sqlfiles.parameters(name)
    for duckdb_only in ("LLR(", "TO_DAYS(", "LIST_CONTAINS(", "QUALIFY", " JSON", "TO_JSON(", " MATERIALIZED"):
        assert duckdb_only not in code.upper(), duckdb_only
    # Spark's own parser (via sqlglot's Spark dialect) reads it back.
    sqlglot.parse_one(text, read="spark")


@pytest.mark.parametrize("name", SPARK_FILES)
def test_binding_leaves_no_marker_and_names_a_missing_parameter(name):
    values = dict.fromkeys(sqlfiles.parameters(name), 1)
    bound = transpile.spark_sql(name, values)
    assert not re.search(r":[a-z_]+\b", re.sub(r"/\*.*?\*/", "", bound))
    if values:
        missing = sorted(values)[0]
        with pytest.raises(KeyError, match=f"sql/{name}.sql needs parameters \\['{missing}'\\]"):
            transpile.spark_sql(name, {k: v for k, v in values.items() if k != missing})


def test_values_become_sqlglot_literals_not_text():
    sql = transpile.spark_sql(
        "session_items",
        {
            "until": dt.datetime(2026, 11, 1, 6, 30),
            "event_types": ("pageView", "it's"),
            "look_back_days": 0,
            "max_session_items": 50,
            "max_views_per_minute": 30,
            "newest": None,
        },
    )
    assert "CAST('2026-11-01 06:30:00' AS TIMESTAMP_NTZ)" in sql
    assert "ARRAY('pageView', 'it\\'s')" in sql


def test_llr_expression_is_mahouts_arithmetic_bit_for_bit():
    """The Spark expression, run in DuckDB (the same C library log as Numba), equals the compiled llr exactly.

    So the expression has Mahout's operations in Mahout's order; on Spark only
    ``ln`` itself (Java's StrictMath.log) can differ, in the last bit.
    """
    spark_sql = transpile.expression("llr(k11, k12, k21, k22)")
    assert "LN(" in spark_sql and "LLR(" not in spark_sql.upper()
    duckdb_sql = sqlglot.transpile(spark_sql, read="spark", write="duckdb")[0]
    counts = [0, 1, 2, 3, 7, 10, 100, 999, 12_345, 1_000_000, 123_456_789]
    cases = [c for c in itertools.product(counts, repeat=4) if sum(c) > 0][::7]
    with warehouse.connect() as connection:
        connection.execute("CREATE TABLE t (k11 BIGINT, k12 BIGINT, k21 BIGINT, k22 BIGINT)")
        connection.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", cases)
        rows = connection.execute(f"SELECT k11, k12, k21, k22, {duckdb_sql} AS score FROM t").fetchall()
    assert len(rows) == len(cases) > 1000
    for *k, score in rows:
        assert score == llr(*k), k


def test_decimal_literals_are_doubles_and_json_is_a_string():
    assert transpile.expression("1.0 / rank") == "CAST(1.0 AS DOUBLE) / rank"
    assert transpile.expression("CAST(p AS JSON)") == "CAST(p AS STRING)"
    assert transpile.column('"timestamp"', "TIMESTAMP", "ts") == "CAST(`timestamp` AS TIMESTAMP_NTZ) AS ts"


def test_tables_are_renamed_where_asked():
    sql = re.sub(r"/\*.*?\*/", "", transpile.spark_sql("evaluation", {}, tables={"itemitem": "holdout_itemitem"}))
    assert "FROM itemitem" not in sql and "FROM holdout_itemitem" in sql
    assert "FROM products" in sql  # names not asked for stay


@pytest.mark.slow
def test_cli_prints_every_file_and_writes_a_folder(tmp_path):
    printed = run_cli("transpile", "--dialect", "spark")
    assert printed.returncode == 0, printed.stderr
    for name in SPARK_FILES:
        assert f"-- sql/{name}.sql, translated" in printed.stdout
    assert "sql/baskets.sql" not in printed.stdout  # DuckDB only
    written = run_cli("transpile", "--output", str(tmp_path / "spark"), "pair_counts", "popular")
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == ["pair_counts.sql", "popular.sql"]
    assert ":min_support" in (tmp_path / "spark" / "pair_counts.sql").read_text()
    unknown = run_cli("transpile", "no_such_step")
    assert unknown.returncode == 2 and "no sql/no_such_step.sql" in unknown.stderr
    local = run_cli("transpile", "baskets")
    assert local.returncode == 2 and "sql/baskets.sql runs on DuckDB only" in local.stderr
