"""The command line as a user and cron see it: real subprocesses, real files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import click
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import config
from engine.pipeline import evaluation
from engine.publish import warehouse
from tests.conftest import copy_built, run_cli, sha256

EXAMPLE = Path(__file__).resolve().parents[1] / "warehouse.duckdb.example"


@pytest.fixture(scope="module")
def built_shop(built_small_shop, tmp_path_factory) -> Path:
    """A copy of the small shop built once by `etalage build`."""
    return copy_built(built_small_shop, tmp_path_factory.mktemp("cli"))


@pytest.mark.slow
def test_build_reports_what_it_read_dropped_and_wrote(built_shop):
    again = run_cli("build", "--config", str(built_shop / "etalage.toml"))
    assert again.returncode == 0
    assert "counted incrementally: 0 new event files" in again.stderr and "read no new events" in again.stderr
    assert "evaluation chart" not in again.stderr  # only with --chart
    assert not (built_shop / "warehouse.duckdb.evaluation.png").exists()
    result = run_cli("build", "--full", "--chart", "--config", str(built_shop / "etalage.toml"))
    assert result.returncode == 0
    assert "counted everything again (full): --full" in result.stderr
    assert "events from" in result.stderr and "duplicate" in result.stderr and "corrupt" in result.stderr
    assert "dropped" in result.stderr and "itemitem rows" in result.stderr
    for step in ("events", "counts", "lists", "itemitem", "evaluation training counts", "snapshot"):
        assert step in result.stderr
    with warehouse.connect(built_shop / "warehouse.duckdb", read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM builds").fetchone()[0] == 3
        scored = connection.execute("SELECT count(DISTINCT build_id), count(*) FROM evaluation").fetchone()
        assert scored == (3, 3 * len(evaluation.SCORED))
    chart = built_shop / "warehouse.duckdb.evaluation.png"
    assert "evaluation chart" in result.stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluate_scores_again_records_and_draws(built_shop, tmp_path):
    live = built_shop / "warehouse.duckdb"
    with warehouse.connect(live, read_only=True) as connection:
        before = connection.execute("SELECT count(*) FROM evaluation").fetchone()[0]
    result = run_cli("evaluate", "--config", str(built_shop / "etalage.toml"), "--chart", str(tmp_path / "e.png"))
    assert result.returncode == 0, result.stderr
    for algorithm in config.CLICK_ALGORITHMS:
        assert algorithm in result.stdout
    assert (tmp_path / "e.png").stat().st_size > 10_000
    with warehouse.connect(live, read_only=True) as connection:
        rows = connection.execute("SELECT count(*), count(DISTINCT evaluated_at) FROM evaluation").fetchone()
        # The same split and parameters score the same as the build did.
        same = connection.execute(
            "SELECT count(DISTINCT round(mrr_at_20, 12)) FROM evaluation WHERE build_id = (SELECT max(build_id) FROM builds) GROUP BY algorithm"
        ).fetchall()
        served = connection.execute("SELECT served_algorithm FROM builds ORDER BY finished_at DESC").fetchone()[0]
    assert rows[0] == before + len(evaluation.SCORED)
    assert same == [(1,)] * len(evaluation.SCORED)
    shown = run_cli("evaluate", "--config", str(built_shop / "etalage.toml"), "--show")
    other = next(a for a in ("jaccard", "popular") if a != served)  # named once: the latest scores only
    assert shown.returncode == 0 and shown.stdout.count(other) == 1 and "diff_95" in shown.stdout


@pytest.mark.slow
def test_sql_table_csv_json_parquet(built_shop, tmp_path):
    config = str(built_shop / "etalage.toml")
    query = "SELECT tenant, count(*) AS n FROM item_counts GROUP BY tenant ORDER BY tenant"
    table = run_cli("sql", query, "--config", config)
    assert table.returncode == 0 and "tenant" in table.stdout and "nl" in table.stdout
    csv = run_cli("sql", query, "--config", config, "--format", "csv")
    assert csv.stdout.splitlines()[0] == '"tenant","n"'
    rows = json.loads(run_cli("sql", query, "--config", config, "--format", "json").stdout)
    assert [r["tenant"] for r in rows] == ["be", "de", "nl"]
    out = tmp_path / "counts.parquet"
    assert run_cli("sql", query, "--config", config, "--format", "parquet", "--output", str(out)).returncode == 0
    assert pq.read_table(out).to_pylist() == rows


def test_sql_is_read_only(built_shop):
    before = run_cli(
        "sql", "SELECT count(*) AS n FROM itemitem", "--config", str(built_shop / "etalage.toml"), "--format", "json"
    )
    result = run_cli("sql", "DELETE FROM builds", "--config", str(built_shop / "etalage.toml"))
    assert result.returncode == 3
    assert "read-only" in result.stderr
    after = run_cli(
        "sql", "SELECT count(*) AS n FROM itemitem", "--config", str(built_shop / "etalage.toml"), "--format", "json"
    )
    assert json.loads(after.stdout) == json.loads(before.stdout)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("COPY (SELECT 'x' AS a) TO '{warehouse}'", "not COPY"),
        ("ATTACH '{other}' AS other (READ_WRITE)", "not ATTACH"),
        ("INSTALL httpfs", "not LOAD"),
        ("SET enable_external_access = true", "not SET"),
        ("CREATE TEMP TABLE t AS SELECT 1", "not CREATE"),
        ("SELECT 1; DROP TABLE itemitem", "not DROP"),
        ("SELECT * FROM read_text('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("SELECT * FROM glob('/*')", "file system operations are disabled"),
        ("SELECT * FROM read_parquet('{other}')", "file system operations are disabled"),
    ],
)
def test_sql_refuses_writes_files_and_settings_and_changes_nothing(built_shop, tmp_path, query, fragment):
    live = built_shop / "warehouse.duckdb"
    other = tmp_path / "other.duckdb"
    with warehouse.connect(other) as connection:
        connection.execute("CREATE TABLE t AS SELECT 1 AS a")
    before = {path: sha256(path) for path in (live, other)}
    result = run_cli("sql", query.format(warehouse=live, other=other), "--config", str(built_shop / "etalage.toml"))
    assert result.returncode == 3, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert {path: sha256(path) for path in (live, other)} == before


def test_the_read_only_connection_reads_its_store_folder_and_nothing_else(tmp_path):
    """The lockdown of `etalage sql` on its own: the folders the warehouse's views read are readable; nothing else is."""
    store = tmp_path / "warehouse.store"
    store.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), store / "rows.parquet")
    pq.write_table(pa.table({"a": [3]}), tmp_path / "outside.parquet")
    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path) as connection:
        connection.execute("SET file_search_path = $folder", {"folder": str(tmp_path)})
        connection.execute("CREATE VIEW rows AS SELECT * FROM read_parquet('warehouse.store/rows.parquet')")
        connection.execute("CREATE VIEW outside AS SELECT * FROM read_parquet('warehouse.store/../outside.parquet')")
    before = sha256(path)
    refused = {
        f"COPY (SELECT 'x' AS a) TO '{path}'": "disabled by configuration",
        f"COPY (SELECT 'x' AS a) TO '{tmp_path / 'out.csv'}'": "disabled by configuration",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other": "disabled by configuration",
        "SELECT * FROM read_text('/etc/passwd')": "disabled by configuration",
        "SELECT * FROM glob('/*')": "disabled by configuration",
        "SELECT * FROM outside": "disabled by configuration",
        f"SELECT * FROM read_parquet('{tmp_path / 'outside.parquet'}')": "disabled by configuration",
        "INSTALL httpfs": "disabled by configuration",
        "LOAD httpfs": "disabled through configuration",
        "SET enable_external_access = true": "the configuration has been locked",
        "SET threads = 1": "the configuration has been locked",
        "RESET allowed_directories": "the configuration has been locked",
    }
    with warehouse.connect_read_only(path) as connection:
        assert connection.execute("SELECT sum(a) FROM rows").fetchone() == (3,)
        assert connection.execute(f"SELECT sum(a) FROM '{store / 'rows.parquet'}'").fetchone() == (3,)
        for query, message in refused.items():
            with pytest.raises(duckdb.Error, match=message):
                connection.execute(query)
    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.parquet", "warehouse.duckdb", "warehouse.store"]


def test_sql_errors_are_one_line_not_tracebacks(built_shop):
    result = run_cli("sql", "SELECT nope FROM itemitem", "--config", str(built_shop / "etalage.toml"))
    assert result.returncode == 3
    assert "nope" in result.stderr and "Traceback" not in result.stderr


def test_sql_parquet_needs_an_output(built_shop):
    result = run_cli("sql", "SELECT 1", "--config", str(built_shop / "etalage.toml"), "--format", "parquet")
    assert result.returncode == 2


def test_sql_on_a_missing_warehouse(tmp_path):
    result = run_cli("sql", "SELECT 1", "--warehouse", str(tmp_path / "none.duckdb"))
    assert result.returncode == 3 and "run `etalage build` first" in result.stderr


def test_publishing_a_folder_that_is_no_spark_build_is_bad_input(built_shop, tmp_path):
    result = run_cli("publish", "--from", str(tmp_path), "--config", str(built_shop / "etalage.toml"))
    assert result.returncode == 3, result.stderr
    assert "no _SUCCESS marker" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_bundled_example_warehouse_matches_a_fresh_build(tmp_path):
    """warehouse.duckdb.example is reproducible: a fresh build of the example shop has the same rows and scores."""
    fresh = tmp_path / "example.duckdb"
    result = run_cli("example-warehouse", "--out", str(fresh))
    assert result.returncode == 0, result.stderr
    with warehouse.connect(EXAMPLE, read_only=True) as bundled, warehouse.connect(fresh, read_only=True) as rebuilt:
        for table in ("itemitem", "item_counts", "products"):
            query = f"SELECT * FROM {table} ORDER BY ALL"
            assert bundled.execute(query).fetchall() == rebuilt.execute(query).fetchall(), table
        assert bundled.execute("SELECT count(*) FROM itemitem").fetchone()[0] > 100_000
        # DuckDB's parallel avg() may add in another order: equal to 12 digits, not to the last bit.
        scores = (
            "SELECT algorithm, sessions, pairs, round(mrr, 12), round(mrr_at_20, 12), round(hit_rate_at_20, 12),"
            " round(coverage, 12) FROM evaluation ORDER BY ALL"
        )
        assert bundled.execute(scores).fetchall() == rebuilt.execute(scores).fetchall()
        mrr = dict(bundled.execute("SELECT algorithm, mrr_at_20 FROM evaluation").fetchall())
    # The example shop's measured margins over the popularity baseline: llr 2.18x, jaccard 1.76x (MRR@20).
    assert mrr["llr"] > 1.8 * mrr["popular"]
    assert mrr["jaccard"] > 1.5 * mrr["popular"]


@pytest.mark.slow
def test_demo_runs_the_whole_example(tmp_path):
    result = run_cli("demo", "--no-serve", "--out", str(tmp_path / "example"))
    assert result.returncode == 0, result.stderr
    assert "Top 5 per algorithm" in result.stdout
    for algorithm in ("cooccurrence", "jaccard", "llr", "popular"):
        assert algorithm in result.stdout


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_taken_port_is_refused_before_anything_is_built(tmp_path, command):
    shop = tmp_path / "example"
    shop.mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        (shop / "etalage.toml").write_text(config.example_toml().replace("port = 8000", f"port = {port}"))
        arguments = ["--out", str(shop)] if command == "demo" else ["--config", str(shop / "etalage.toml")]
        result = run_cli(command, *arguments)
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert f"set serving.port in {shop / 'etalage.toml'}" in result.stderr
    assert sorted(p.name for p in shop.iterdir()) == ["etalage.toml"]  # nothing generated, built or published


def test_every_option_of_every_command_says_what_it_is_for():
    from engine import cli

    undescribed = [
        f"etalage {name} {option.opts[0]}"
        for name, command in cli.main.commands.items()
        for option in command.params
        if isinstance(option, click.Option) and not option.help
    ]
    assert undescribed == []


def test_a_table_too_wide_for_the_terminal_is_printed_row_by_row(built_shop):
    wide = run_cli("evaluate", "--show", "--config", str(built_shop / "etalage.toml"), environment={"COLUMNS": "200"})
    narrow = run_cli("evaluate", "--show", "--config", str(built_shop / "etalage.toml"), environment={"COLUMNS": "80"})
    assert wide.returncode == narrow.returncode == 0, narrow.stderr
    assert "┃ algorithm" in wide.stdout and "┃" not in narrow.stdout
    assert max(map(len, narrow.stdout.splitlines())) <= 80
    lines = [line.strip() for line in narrow.stdout.splitlines() if line.strip() and "row " not in line]
    cells = [line.split(None, 1) for line in lines]
    shown = [dict(cells[i : i + 10]) for i in range(0, len(cells), 10)]
    assert [s["algorithm"] for s in shown] == sorted(evaluation.SCORED)  # every value whole
    assert all(s["diff_95"].startswith("[") for s in shown)  # brackets in the data are not read as markup
