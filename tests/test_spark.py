"""The Spark engine against DuckDB on the small shop, in Spark's local mode.

* Parity: the same rows in every published table, the same top-N lists, the
  same counts and Jaccard (bit for bit), and the LLR within a few ulp of
  N ln N (Java's StrictMath.log may differ from the C library's log in the
  last bit, and a score sums ten ``x ln x`` terms of up to N ln N).
* Every file in ``sql/`` runs on Spark and gives DuckDB's rows on the same
  input, both with etalage's bound literals and with Spark's own parameter
  markers as ``etalage transpile`` prints them.

Skipped, saying why, where pyspark or Java is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from msgspec.structs import replace

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]' (the test extra has it)")
if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
    pytest.skip("no Java on this machine: the Spark engine needs Java 17 or newer", allow_module_level=True)

import engine
from engine import build, config, sqlfiles
from engine.pipeline import evaluation
from engine.publish import snapshot, spark_output, warehouse
from engine.spark import runner, transpile
from tests.conftest import divolte_events, write_shop_folder

ULPS = 8
"""LLR tolerance in ulp of N ln N: each of the ten xLogX terms may be 1 ulp off; 2 ulp were seen on the small shop."""


def llr_tolerance(sessions: int) -> float:
    return ULPS * math.ulp(sessions * math.log(sessions))


@pytest.fixture(scope="module")
def spark():
    """One local Spark session for the whole module (starting the JVM takes seconds)."""
    session = runner.session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def duck(small_shop, tmp_path_factory) -> Path:
    """The small shop's DuckDB warehouse (the default Numba kernel path)."""
    cfg = config.load(small_shop / "etalage.toml")
    cfg = replace(cfg, warehouse=tmp_path_factory.mktemp("duck") / "warehouse.duckdb")
    build.build(cfg)
    return cfg.warehouse


@pytest.fixture(scope="module")
def on_spark(small_shop, spark, tmp_path_factory) -> tuple[Path, build.BuildResult]:
    """The same shop built on Spark from the same Avro files: its output folder and result."""
    cfg = config.load(small_shop / "etalage.toml")
    output = tmp_path_factory.mktemp("spark") / "tables"
    return output, runner.build(cfg, output, spark=spark)


def parquet(output: Path, table: str) -> str:
    return f"read_parquet('{output / table}/*.parquet')"


def rows(connection, query: str) -> list[tuple]:
    return connection.execute(query).fetchall()


@pytest.mark.slow
def test_every_table_is_written_with_the_warehouse_columns(duck, on_spark):
    output, result = on_spark
    assert sorted(p.name for p in output.iterdir()) == sorted([*runner.OUTPUT_TABLES, "_SUCCESS"])
    assert not Path(str(output) + ".building").exists()
    with warehouse.connect(duck, read_only=True) as connection:
        for table in runner.OUTPUT_TABLES:
            ours = [(c[0], c[1]) for c in rows(connection, f"DESCRIBE {table}")]
            theirs = [(c[0], c[1]) for c in rows(connection, f"DESCRIBE SELECT * FROM {parquet(output, table)}")]
            # Spark has no JSON type: the parameters column is their text.
            assert theirs == [(n, "VARCHAR" if t == "JSON" else t) for n, t in ours], table
            assert result.rows[table] == rows(connection, f"SELECT count(*) FROM {parquet(output, table)}")[0][0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "table", ["events", "ingest_stats", "products", "session_items", "item_counts", "tenant_sessions"]
)
def test_the_tables_under_itemitem_have_the_same_rows(duck, on_spark, table):
    output, _ = on_spark
    with warehouse.connect(duck, read_only=True) as connection:
        count = rows(connection, f"SELECT count(*) FROM {table}")[0][0]
        assert count > 0
        for a, b in ((table, parquet(output, table)), (parquet(output, table), table)):
            assert rows(connection, f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})") == [(0,)]


@pytest.mark.slow
def test_cooccurrence_jaccard_and_popular_lists_are_identical(duck, on_spark):
    output, _ = on_spark
    with warehouse.connect(duck, read_only=True) as connection:
        ours = rows(connection, "SELECT * FROM itemitem WHERE algorithm <> 'llr' ORDER BY ALL")
        theirs = rows(connection, f"SELECT * FROM {parquet(output, 'itemitem')} WHERE algorithm <> 'llr' ORDER BY ALL")
    assert len(ours) > 30_000
    assert theirs == ours  # scores included, bit for bit: counts and one IEEE division


@pytest.mark.slow
def test_llr_lists_are_the_same_and_scores_within_a_few_ulp(duck, on_spark):
    output, _ = on_spark
    with warehouse.connect(duck, read_only=True) as connection:
        n = dict(rows(connection, "SELECT tenant, sessions FROM tenant_sessions"))
        query = "SELECT tenant, product_id, rank, related_product_id, distance_score FROM {} WHERE algorithm = 'llr'"
        ours = rows(connection, query.format("itemitem"))
        theirs = rows(connection, query.format(parquet(output, "itemitem")))
    differences = assert_same_lists(ours, theirs, {t: llr_tolerance(s) for t, s in n.items()})
    assert len(ours) > 10_000
    # The scores do differ in the last bits (else this test would not be testing the tolerance).
    assert 0 < max(differences.values()) <= ULPS


def assert_same_lists(ours: list[tuple], theirs: list[tuple], tolerance: dict[str, float]) -> dict[str, float]:
    """Compare ranked lists of ``(tenant, product_id, rank, related_product_id, score)`` rows.

    Scores must agree within the tenant's tolerance, rank by rank. The related
    products must be the same at every rank, except inside a near-tie: ranks
    whose scores lie within twice the tolerance of each other may come in
    either order, because a last-bit difference can swap them (and the last
    near-tie of a list may swap with the product just below the cut-off).
    Returns the largest score difference per tenant, in ulp of N ln N.
    """
    lists: dict[tuple, dict[str, list]] = defaultdict(lambda: {"ours": [], "theirs": []})
    for side, table in (("ours", ours), ("theirs", theirs)):
        for tenant, product, rank, related, score in table:
            lists[(tenant, product)][side].append((rank, related, score))
    worst: dict[str, float] = defaultdict(float)
    swapped = 0
    for (tenant, product), sides in lists.items():
        a, b = sorted(sides["ours"]), sorted(sides["theirs"])
        assert [r for r, _, _ in a] == [r for r, _, _ in b] == list(range(1, len(a) + 1)), (tenant, product)
        tol = tolerance[tenant]
        for (rank, mine, s1), (_, other, s2) in zip(a, b, strict=True):
            assert abs(s1 - s2) <= tol, (tenant, product, rank, s1, s2)
            worst[tenant] = max(worst[tenant], abs(s1 - s2) / (tol / ULPS))
            if mine != other:
                tied = {x for _, x, s in a if abs(s - s1) <= 2 * tol}
                at_cut_off = abs(a[-1][2] - s1) <= 2 * tol
                assert other in tied or at_cut_off, (tenant, product, rank, mine, other)
                swapped += 1
    assert swapped <= len(ours) // 1000, f"{swapped} near-tie swaps: more than round-off explains"
    return dict(worst)


@pytest.mark.slow
def test_evaluation_and_builds_agree(duck, on_spark):
    output, result = on_spark
    scores = (
        "mrr",
        "mrr_at_5",
        "mrr_at_10",
        "mrr_at_20",
        "hit_rate_at_5",
        "hit_rate_at_10",
        "hit_rate_at_20",
        "coverage",
        "popularity_bias",
        "mrr_at_20_diff",
        "mrr_at_20_diff_low",
        "mrr_at_20_diff_high",
    )
    columns = ", ".join(("algorithm", "cutoff", "sessions", "pairs", "compared_with", *scores))
    with warehouse.connect(duck, read_only=True) as connection:
        ours = rows(connection, f"SELECT {columns} FROM evaluation ORDER BY algorithm")
        theirs = rows(connection, f"SELECT {columns} FROM {parquet(output, 'evaluation')} ORDER BY algorithm")
        build_columns = "event_files, events_read, dropped_duplicate, dropped_corrupt, events_kept, itemitem_rows, parameters::VARCHAR"
        assert rows(connection, f"SELECT {build_columns} FROM builds") == rows(
            connection, f"SELECT {build_columns} FROM {parquet(output, 'builds')}"
        )
        assert rows(connection, f"SELECT build_id FROM {parquet(output, 'builds')}") == [(result.build_id,)]
    assert len(ours) == len(theirs) == len(evaluation.SCORED)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine[:5] == other[:5]
        # Averages summed in another order: equal to about 1e-15, not bit for bit. The bootstrap draws the
        # same sessions on both engines, so the intervals agree as closely.
        assert other[5:] == pytest.approx(mine[5:], rel=1e-12, abs=1e-15)
    assert {row[4] for row in ours} == {result.served_algorithm}


# -- every file in sql/ on Spark ---------------------------------------------------------------------------------

ORDER = (
    "events",
    "file_counts",
    "ingest_stats",
    "click_through",
    "newest_event",
    "session_items",
    "session_steps",
    "item_counts",
    "tenant_sessions",
    "pair_counts",
    "ranked_pairs",
    "ranked_steps",
    "popular",
    "itemitem",
    "visual_blend",
    "itemitem_visual",
    "test_events",
    "test_items",
    "transition_ranks",
    "session_gains",
    "visit_lists",
    "visit_ranks",
    "evaluation",
    "build_record",
)
"""Every sql/ file in an order where each one's inputs come before it (except ``transpile.DUCKDB_ONLY``)."""
DUCKDB_ONLY = transpile.DUCKDB_ONLY


@pytest.fixture(scope="module")
def same_input(duck, spark, tmp_path_factory):
    """A DuckDB connection and the Spark session with the same input tables, and the parameters to bind.

    ``mapped_events`` is the warehouse's events with some flagged (and some
    NULL) duplicate and corrupt; ``products`` the catalogue. Both engines read
    them from the same Parquet files, then each file's inputs are the tables
    its predecessors in :data:`ORDER` made, in each engine on its own.
    """
    folder = tmp_path_factory.mktemp("same-input")
    connection = warehouse.connect()
    connection.execute(f"ATTACH '{duck}' AS built (READ_ONLY)")
    connection.execute(
        """
        CREATE TABLE mapped_events AS
        SELECT CASE WHEN event_id % 2 = 0 THEN 'avro' ELSE 'parquet' END AS source_format,
               'events-' || (event_id % 5) || '.parquet' AS filename, *,
               CASE event_id % 23 WHEN 0 THEN TRUE WHEN 1 THEN NULL ELSE FALSE END AS is_duplicate,
               CASE event_id % 19 WHEN 0 THEN TRUE WHEN 1 THEN NULL ELSE FALSE END AS is_corrupt
        FROM (SELECT hash(session_id, ts, product_id, event_type) AS event_id, * FROM built.events)
        """
    )
    connection.execute("CREATE TABLE products AS SELECT * FROM built.products")
    connection.execute("DETACH built")
    # Exposures a minute before some product views, of that product or of another: some clicked, some not.
    connection.execute(
        """
        CREATE TABLE exposures AS
        SELECT 'x' || row_number() OVER (ORDER BY event_id) AS exposure_id, ts - INTERVAL 1 MINUTE AS ts,
               party_id AS visitor, tenant, product_id, 'exp-' || (hash(event_id) % 2) AS experiment,
               CASE WHEN hash(event_id) % 3 = 0 THEN 'a' ELSE 'b' END AS variant, 'llr' AS algorithm, 's1' AS snapshot,
               CASE WHEN hash(event_id) % 4 = 0 THEN ['none'] ELSE [product_id, 'none'] END AS shown
        FROM mapped_events WHERE product_id IS NOT NULL AND hash(event_id) % 40 = 0
        """
    )
    for table in ("mapped_events", "products", "exposures"):
        connection.table(table).write_parquet(str(folder / f"{table}.parquet"))
        spark.read.parquet(str(folder / f"{table}.parquet")).createOrReplaceTempView(table)
    newest = connection.execute("SELECT max(ts) FROM mapped_events").fetchone()[0]
    values = {
        **config.Algorithms().parameters(),
        "until": None,
        "newest": newest,
        "counting": "full",
        "counting_reason": "a test",
        "newest_event": newest,
        "counted_with": '{"format": 1}',
        "cutoff": newest - dt.timedelta(days=5),
        "build_id": "b-1",
        "started_at": dt.datetime(2026, 11, 1, 6),
        "finished_at": dt.datetime(2026, 11, 1, 7),
        "config_path": None,
        "parameters": '{"top_n": 20}',
        "event_files": 3,
        "events_read": 10,
        "dropped_duplicate": 1,
        "dropped_corrupt": 2,
        "events_kept": 7,
        "itemitem_rows": 5,
        "served_algorithm": "llr",
        "min_sessions": 5,
        "algorithm": "llr",
        "name": evaluation.VISIT,
    }
    made: list[str] = []

    def make(name: str) -> None:
        """Make ``name`` and everything before it in both engines, once."""
        for step in ORDER[: ORDER.index(name) + 1]:
            if step in made:
                continue
            if step == "ingest_stats":  # it sums the ledger, which here is what file_counts counted
                connection.execute("CREATE TABLE ingested_files AS SELECT source_format AS format, * FROM file_counts")
                spark.table("file_counts").withColumnRenamed("source_format", "format").createOrReplaceTempView(
                    "ingested_files"
                )
            if step == "test_items":  # the test sessions' items, read by session_items.sql as a build reads them
                tables = {"events": "test_events"}
                sqlfiles.create_table(connection, "session_items", values, table="test_session_items", reading=tables)
                text = transpile.spark_sql("session_items", values, tables=tables)
                spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW test_session_items AS {text}")
                made.append("test_session_items")
            sqlfiles.create_table(connection, step, values)
            spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {step} AS {transpile.spark_sql(step, values)}")
            made.append(step)

    yield connection, make, values
    connection.close()
    for step in [*made, "mapped_events", "products", "exposures", "ingested_files"]:
        spark.catalog.dropTempView(step)


def test_the_order_covers_every_file():
    assert sorted([*ORDER, *DUCKDB_ONLY]) == sqlfiles.names(), (
        "add the new sql/ file to ORDER, after the files it reads"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in sqlfiles.names() if name not in DUCKDB_ONLY])
def test_every_sql_file_runs_on_spark_and_gives_duckdbs_rows(name, spark, same_input):
    connection, make, values = same_input
    if name not in ORDER:
        pytest.fail(f"sql/{name}.sql is not in ORDER")
    make(name)
    ours = connection.execute(f"SELECT * FROM {name}").fetchall()
    columns = [c[0] for c in connection.execute(f"DESCRIBE {name}").fetchall()]
    bound = spark.table(name)
    # Spark binds a Python datetime in the Python process's time zone; etalage's literals are wall-clock text.
    args = {
        k: values[k].isoformat(sep=" ") if isinstance(values[k], dt.datetime) else values[k]
        for k in sqlfiles.parameters(name)
    }
    marked = spark.sql(transpile.spark_sql(name), args=args)
    n = (
        dict(connection.execute("SELECT tenant, sessions FROM tenant_sessions").fetchall())
        if "tenant_sessions" in ORDER[: ORDER.index(name)]
        else {}
    )
    assert ours, f"sql/{name}.sql made no rows here: the comparison would prove nothing"
    for frame in (bound, marked):
        assert frame.columns == columns
        theirs = [tuple(r) for r in frame.collect()]
        mine = ours
        assert_same_rows(name, mine, theirs, {t: llr_tolerance(sessions) for t, sessions in n.items()})


def assert_same_rows(name: str, ours: list[tuple], theirs: list[tuple], tolerance: dict[str, float]) -> None:
    """The same rows in any order; floats to 1e-12 (LLR, averages), ranked lists by :func:`assert_same_lists`."""
    assert len(theirs) == len(ours), name
    if name in ("ranked_pairs", "itemitem", "visual_blend", "itemitem_visual"):
        # Lists ranked by the LLR (with no visual rows in this input, the blend is the warm products' llr lists)
        # are compared within its ulp tolerance, list by list; every other row exactly.
        by_llr = ("llr", "visual_blend")
        exact = sorted(r for r in ours if r[1] not in by_llr), sorted(r for r in theirs if r[1] not in by_llr)
        assert exact[0] == exact[1]
        for algorithm in by_llr:
            lists = [[(r[0], r[2], r[3], r[4], r[5]) for r in side if r[1] == algorithm] for side in (ours, theirs)]
            assert_same_lists(*lists, tolerance=tolerance)
        return
    key = lambda row: tuple((v is None, round(v, 9) if isinstance(v, float) else v) for v in row)  # noqa: E731
    for mine, other in zip(sorted(ours, key=key), sorted(theirs, key=key), strict=True):
        assert len(mine) == len(other) and all(
            math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) if isinstance(a, float) else a == b
            for a, b in zip(mine, other, strict=True)
        ), (name, mine, other)


# -- the command line and spark-submit ----------------------------------------------------------------------------


@pytest.mark.slow
def test_spark_submit_runs_a_build_from_parquet_events(tmp_path):
    """What a cluster runs: spark-submit with etalage's entry point, here on a hand-made shop read from Parquet."""
    events = divolte_events(
        [{"session": s, "product": p, "tenant": "nl"} for s in range(40) for p in (f"{s % 5}", f"{s % 5 + 1}", "9")]
    )
    config_path = write_shop_folder(tmp_path, events, {"nl": [str(p) for p in range(10)]}, "min_support = 1")
    text = config_path.read_text().replace('avro = ["events/avro/**/*.avro"]', 'parquet = ["events/parquet/*.parquet"]')
    config_path.write_text(text + '[evaluation]\ntest_days = 0\n[snapshots]\ngate_algorithm = "llr"\n')
    submit = Path(sys.executable).parent / "spark-submit"
    main = Path(engine.__file__).with_name("__main__.py")
    done = subprocess.run(
        [
            str(submit),
            "--master",
            "local[1]",
            "--conf",
            "spark.ui.enabled=false",
            str(main),
            "build",
            "--engine",
            "spark",
            "--config",
            str(config_path),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    said = done.stdout + done.stderr  # spark-submit passes the Python driver's stderr on to its stdout
    assert done.returncode == 0, said[-3000:]
    assert "on Spark (local[1])" in said and "itemitem rows" in said
    with warehouse.connect() as connection:
        top = connection.execute(
            f"SELECT related_product_id FROM {parquet(tmp_path / 'out', 'itemitem')}"
            " WHERE algorithm = 'cooccurrence' AND product_id = '1' ORDER BY rank"
        ).fetchall()
        stats = connection.execute(
            f"SELECT source_format, events_kept FROM {parquet(tmp_path / 'out', 'ingest_stats')}"
        ).fetchall()
    assert stats == [("parquet", 120)]
    # Product 1 is seen with 0, 2 and 9 (sessions s % 5 in 0 and 1), 9 in all 16 of its sessions.
    assert [r[0] for r in top] == ["9", "0", "2"]


def test_engine_options_are_checked(small_shop):
    from tests.conftest import run_cli

    wrong = run_cli("build", "--config", str(small_shop / "etalage.toml"), "--master", "local[1]")
    assert wrong.returncode == 2 and "--master, --output and --build-id go with --engine spark" in wrong.stderr
    for flag in ("--full", "--chart"):
        wrong = run_cli("build", "--config", str(small_shop / "etalage.toml"), "--engine", "spark", flag)
        assert wrong.returncode == 2 and f"{flag} goes with --engine duckdb" in wrong.stderr


@pytest.mark.slow
def test_a_mapping_spark_cannot_run_names_its_key_and_writes_nothing(tmp_path, spark):
    events = divolte_events([{"session": 1, "product": "1"}, {"session": 1, "product": "2"}])
    config_path = write_shop_folder(tmp_path, events, {"nl": ["1", "2"]})
    config_path.write_text(config_path.read_text() + '[events.mapping]\nparty_id = "no_such_function(partyId)"\n')
    with pytest.raises(
        config.ConfigError, match=r"events\.mapping\.party_id fails on the avro files: 'no_such_function"
    ):
        runner.build(config.load(config_path), tmp_path / "out", spark=spark)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.building").exists()


@pytest.mark.slow
def test_an_output_folder_that_is_not_a_spark_build_is_never_replaced(tmp_path, spark):
    events = divolte_events([{"session": 1, "product": "1"}, {"session": 1, "product": "2"}])
    config_path = write_shop_folder(tmp_path, events, {"nl": ["1", "2"]})
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("years of work")
    with pytest.raises(config.ConfigError, match="is not the output of an etalage Spark build"):
        runner.build(config.load(config_path), tmp_path / "precious", spark=spark)
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "years of work"


# -- publishing a Spark build ----------------------------------------------------------------------------------


def spark_config(small_shop: Path, folder: Path) -> config.Config:
    cfg = config.load(small_shop / "etalage.toml")
    snapshots = replace(cfg.snapshots, root=folder / "snapshots")
    return replace(cfg, warehouse=folder / "warehouse.duckdb", snapshots=snapshots)


@pytest.mark.slow
def test_a_published_spark_build_serves_the_duckdb_builds_lists(small_shop, duck, on_spark, tmp_path):
    """Spark's output taken in by `etalage publish`: history, views for analysts, and the same served lists."""
    from server.reader import ServedSnapshot

    output, result = on_spark
    assert json.loads((output / "_SUCCESS").read_text())["build_id"] == result.build_id
    cfg = spark_config(small_shop, tmp_path)
    published = spark_output.publish(cfg, str(output))
    assert published.build_id == result.build_id and published.gate.verdict == "first"
    served = ServedSnapshot(published.snapshot.path)
    with warehouse.connect(duck, read_only=True) as connection:
        lists = connection.execute("SELECT tenant, algorithm, product_id, list(related_product_id ORDER BY rank), "
                                   "list(distance_score ORDER BY rank) FROM itemitem GROUP BY ALL").fetchall()  # fmt: skip
    n = dict(warehouse.connect(duck, read_only=True).execute("SELECT tenant, sessions FROM tenant_sessions").fetchall())
    assert len(lists) > 1000
    for tenant, algorithm, product, related, scores in lists:
        answer = served.recommendations(tenant, algorithm, product, 100)
        if algorithm == "llr":  # within the LLR's ulps; a near-tie may swap (none was seen)
            assert [r.score for r in answer] == pytest.approx(scores, abs=llr_tolerance(n[tenant]))
        else:
            assert [r.product_id for r in answer] == related and [r.score for r in answer] == scores
    # Analysts query the Spark tables through the warehouse; the build joined its history.
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM itemitem").fetchone()[0] == published.rows["itemitem"]
        assert connection.execute("SELECT build_id FROM builds").fetchall() == [(result.build_id,)]
        assert connection.execute(
            "SELECT count(*) FROM evaluation WHERE build_id = $b", {"b": result.build_id}
        ).fetchone()[0] == len(evaluation.SCORED)
    # The same output again is refused (its snapshot is there: a rollback makes it live), and nothing changes.
    with pytest.raises(spark_output.OutputRefused, match="is published already"):
        spark_output.publish(cfg, str(output))
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM builds").fetchone()[0] == 1


@pytest.mark.slow
def test_publish_refuses_an_unfinished_or_misshapen_output(small_shop, on_spark, tmp_path):
    output, _ = on_spark
    cfg = spark_config(small_shop, tmp_path / "shop")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(output, unfinished)
    (unfinished / "_SUCCESS").unlink()
    with pytest.raises(spark_output.OutputRefused, match="no _SUCCESS marker"):
        spark_output.publish(cfg, str(unfinished))
    misshapen = tmp_path / "misshapen"
    shutil.copytree(output, misshapen)
    for part in (misshapen / "itemitem").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(
            table.rename_columns(["score" if c == "distance_score" else c for c in table.column_names]), part
        )
    with pytest.raises(spark_output.OutputRefused, match="table itemitem has no column 'distance_score'"):
        spark_output.publish(cfg, str(misshapen))
    assert not (tmp_path / "shop" / "warehouse.duckdb").exists() and snapshot.live(cfg.snapshots.root) is None
