"""The README is the contract: every table, column, command, config key and SQL file is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from engine import build, cli, config, sqlfiles
from engine.pipeline import state
from engine.publish import warehouse
from tests.conftest import shop_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def documented_tables() -> dict[str, list[tuple[str, str]]]:
    """``### `name` `` sections of the README and the (column, type) rows of their first table."""
    tables = {}
    for match in re.finditer(r"^### `(\w+)`\n(.*?)(?=^### |^## )", README, flags=re.M | re.S):
        rows = re.findall(r"^\| `(\w+)` \| ([A-Z]+(?:\[\])?) \|", match.group(2), flags=re.M)
        tables[match.group(1)] = rows
    return tables


@pytest.fixture(scope="module")
def built(small_shop, tmp_path_factory) -> Path:
    cfg = shop_config(small_shop, tmp_path_factory.mktemp("docs"))
    build.build(cfg)
    return cfg.warehouse


def test_every_table_in_the_warehouse_is_documented_with_its_columns(built):
    with warehouse.connect(built, read_only=True) as connection:
        names = connection.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
        ).fetchall()
        actual = {name: [(c[0], c[1]) for c in connection.execute(f"DESCRIBE {name}").fetchall()] for (name,) in names}
    documented = documented_tables()
    assert {table: documented[table] for table in actual} == actual
    # Every documented table is made by a build, except `tuning`, which `etalage tune` adds (tests/test_tune.py),
    # and `embeddings`, which lives in the visual stage's cache file (tests/test_visual_build.py checks its columns).
    later = {"tuning", "embeddings"}
    made = set(build.PUBLISHED_TABLES) | set(warehouse.HISTORY_TABLES) | set(state.TABLES)
    assert set(actual) == set(documented) - later == made - later


def test_every_command_is_documented():
    for name in cli.main.commands:
        assert f"`etalage {name}" in README, name


def test_every_config_key_is_documented():
    keys = {"warehouse.path", "catalogue.path", "events.avro", "events.parquet"}
    for table, kind in (
        ("algorithms", config.Algorithms),
        ("evaluation", config.Evaluation),
        ("visual", config.Visual),
        ("snapshots", config.Snapshots),
        ("serving", config.Serving),
        ("experiment", config.Experiment),
        ("experiment.variants[]", config.Variant),
    ):
        keys |= {f"{table}.{f.name}" for f in dataclasses.fields(kind)}
    for key in keys:
        assert f"| `{key}` |" in README, key
    for column, expression in config.DIVOLTE_MAPPING.items():
        assert f"| `{column}` | `{expression.replace('|', '|')}` |" in README, column


def test_every_sql_file_is_documented():
    for name in sqlfiles.names():
        assert f"sql/{name}.sql" in README, name


def test_exit_codes_are_documented():
    codes = [value for name, value in vars(cli).items() if name.startswith("EXIT_")]
    assert sorted(codes) == [3, 4, 5, 6, 7, 8]
    for code in [0, 1, 2, *codes]:
        assert f"\n| {code} |" in README


def test_the_analysts_first_five_queries_run_on_the_example_warehouse():
    section = README.split("### An analyst's first five queries", 1)[1]
    block = section.split("```sql", 1)[1].split("```", 1)[0]
    queries = [q for q in block.split(";") if q.strip()]
    assert len(queries) == 5
    example = Path(__file__).resolve().parents[1] / "warehouse.duckdb.example"
    with warehouse.connect(example, read_only=True) as connection:
        for query in queries:
            assert connection.execute(query).fetchall(), query
