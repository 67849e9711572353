"""An incremental build equals a build from scratch: every table, rank and score, whatever arrives in what order.

A generated shop's hourly Avro files arrive a few hours at a time, with
late files for old hours, sessions that span two builds, products removed
from the catalogue and put back, and (in one case) a look-back window that
leaves old sessions behind. After every build, a build from scratch over
the same files and catalogue must give the same rows in the same order,
the same evaluation to the last bit, and the same snapshot. A build killed
at any of its steps and run again must too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numba
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from msgspec.structs import replace

from engine import build, config
from engine.example import generator
from engine.publish import crashpoints, snapshot, warehouse
from tests.conftest import run_cli, served_rows

SHOP = generator.ShopSpec(products=240, brands=20, events=9_000, days=5, seed=3)


@pytest.fixture(scope="module")
def hours(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The shop's folder (catalogue, config) and its hourly Avro files, oldest first."""
    folder = tmp_path_factory.mktemp("hours")
    generator.write_shop(generator.generate(SHOP), folder, ("avro",), images=False)
    (folder / "etalage.toml").write_text(config.example_toml())
    files = sorted((folder / "events" / "avro").rglob("*.avro"))
    assert len(files) > 100
    return folder, files


def shop_with(
    source: Path, target: Path, files: list[Path], catalogue: list[dict], look_back_days: int = 0
) -> config.Config:
    """A shop folder holding ``files`` (hourly Avro) and ``catalogue``, and its config: what one build sees.

    Short lists, every pair counted, and a day held out, so that every change shows.
    """
    for path in files:
        copy = target / path.relative_to(source)
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
    schema = pq.read_schema(source / "catalogue.parquet")
    pq.write_table(pa.Table.from_pylist(catalogue, schema=schema), target / "catalogue.parquet")
    text = (source / "etalage.toml").read_text()
    for old, new in (
        ("top_n = 20", "top_n = 10"),
        ("min_support = 2", "min_support = 1"),
        ("look_back_days = 0", f"look_back_days = {look_back_days}"),
        ("test_days = 7", "test_days = 1"),
    ):
        assert old in text
        text = text.replace(old, new)
    (target / "etalage.toml").write_text(text)
    return config.load(target / "etalage.toml")


def contents(cfg: config.Config) -> dict:
    """Everything a build publishes, in a form to compare: tables (itemitem in its order), scores, the snapshot."""
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        found = {
            "itemitem": connection.execute("SELECT * FROM itemitem").fetchall(),
            **{
                table: connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
                for table in ("item_counts", "tenant_sessions", "session_items", "ingest_stats", "products")
            },
            "evaluation": connection.execute(
                "SELECT * EXCLUDE (build_id, evaluated_at) FROM evaluation "
                "WHERE build_id = (SELECT max(build_id) FROM builds) ORDER BY algorithm"
            ).fetchall(),
        }
        tested = connection.execute("SELECT path FROM kept_files WHERE part = 'test_sessions'").fetchone()
    # The test sessions kept for the next build (an incremental one changed the last build's by delta; the SQL path
    # keeps none).
    rows = pq.read_table(cfg.warehouse.parent / tested[0]).to_pylist() if tested else []
    found["test_sessions"] = sorted(rows, key=str)
    live = snapshot.live(cfg.snapshots.root)
    # What is served; not where (an incremental build's snapshot keeps unchanged lists in the live one's files).
    found["served"] = served_rows(live.path)
    found["lists.arrow"] = snapshot.read_table(live.file("lists.arrow")).drop_columns(["first_row"])
    found["products.arrow"] = snapshot.read_table(live.file("products.arrow"))
    scores = live.manifest["evaluation"]
    found["manifest"] = {
        "rows": {name: rows for name, rows in live.manifest["rows"].items() if not name.startswith("itemitem")},
        "evaluation": {algorithm: {**row, "evaluated_at": None} for algorithm, row in scores.items()},
    }
    return found


def assert_same(incremental: dict, scratch: dict) -> None:
    assert incremental.keys() == scratch.keys()
    for key, value in scratch.items():
        if hasattr(value, "equals"):
            assert incremental[key].equals(value), key
        else:
            assert incremental[key] == value, key


def arrivals(files: list[Path], rng: random.Random) -> list[list[Path]]:
    """The files in five builds' worth, oldest first, but three of them held back as late files of old hours."""
    late = rng.sample(files[: len(files) // 2], 3)
    on_time = [f for f in files if f not in late]
    cuts = sorted(rng.sample(range(1, len(on_time)), 4))
    chunks = [on_time[a:b] for a, b in zip([0, *cuts], [*cuts, len(on_time)], strict=True)]
    for number, path in enumerate(late):
        chunks[2 + number % 3].append(path)
    return chunks


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "look_back_days"), [(1, 0), (2, 2), (3, 0)])
def test_incremental_builds_equal_builds_from_scratch(hours, tmp_path, seed, look_back_days):
    source, files = hours
    rng = random.Random(seed)
    products = pq.read_table(source / "catalogue.parquet").to_pylist()
    removed = rng.sample(range(len(products)), len(products) // 20)
    seen: list[Path] = []
    for step, chunk in enumerate(arrivals(files, rng)):
        seen += chunk
        # The catalogue loses 5% of its products in the third build and gets half of them back in the fourth.
        gone = set(removed) if step == 2 else set(removed[::2]) if step == 3 else set()
        catalogue = [row for number, row in enumerate(products) if number not in gone]
        incremental = shop_with(source, tmp_path / "incremental", seen, catalogue, look_back_days=look_back_days)
        result = build.build(incremental)
        assert result.counting == ("full" if step == 0 else "incremental"), result.counting_reason
        scratch = shop_with(source, tmp_path / f"scratch-{step}", seen, catalogue, look_back_days=look_back_days)
        build.build(scratch)
        assert_same(contents(incremental), contents(scratch))


@pytest.mark.slow
def test_a_config_change_that_alters_what_counts_counts_again(hours, tmp_path):
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    first = shop_with(source, tmp_path / "shop", files[:60], catalogue)
    build.build(first)
    rules = replace(first, algorithms=replace(first.algorithms, max_session_items=5))
    result = build.build(rules, force=True)  # fewer products per session score lower: past the gate
    assert result.counting == "recount"
    assert result.counting_reason.startswith("algorithms.max_session_items changed from 200 to 5 since build")
    scratch = shop_with(source, tmp_path / "scratch", files[:60], catalogue)
    scratch = replace(scratch, algorithms=rules.algorithms)
    build.build(scratch)
    assert_same(contents(rules), contents(scratch))
    mapping = {**rules.events.mapping, "tenant": "upper(" + rules.events.mapping["tenant"] + ")"}
    remapped = replace(rules, events=replace(rules.events, mapping=mapping))
    result = build.build(remapped, force=True)
    assert (result.counting, result.counting_reason[:23]) == ("full", "events.mapping changed ")
    assert result.files == {"avro": 60}  # every file ingested again
    # The sequential rules' reach changes what the stored follow counts mean.
    reach = replace(remapped, algorithms=replace(remapped.algorithms, sr_window=2))
    result = build.build(reach, force=True)
    assert result.counting == "recount"
    assert result.counting_reason.startswith("algorithms.sr_window changed from 5 to 2 since build")
    scratch = replace(scratch, algorithms=reach.algorithms, events=reach.events)
    build.build(scratch, full=True, force=True)  # another tenant mapping and reach: past the gate
    assert_same(contents(reach), contents(scratch))


@pytest.mark.slow
def test_where_kernels_cannot_run_at_once_the_snapshot_is_staged_after_the_gate(hours, tmp_path, monkeypatch):
    """Staged at the end instead of during the evaluation (Numba's workqueue layer): the same snapshot and manifest."""
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    published = {}
    for name in ("during", "after"):
        if name == "after":
            if not build._kernels_run_concurrently():
                pytest.skip(f"Numba's {numba.threading_layer()} layer here stages every snapshot after the gate")
            monkeypatch.setattr(build, "_kernels_run_concurrently", lambda: False)
        cfg = shop_with(source, tmp_path / name, files[:40], catalogue)
        build.build(cfg)
        shop_with(source, tmp_path / name, files[:60], catalogue)
        assert build.build(cfg).counting == "incremental"
        published[name] = contents(cfg)
    assert_same(published["after"], published["during"])


@pytest.mark.slow
def test_a_build_of_fewer_algorithms_gives_exactly_their_rows_and_scores(hours, tmp_path):
    """``algorithms.compute`` naming three: their rows, scores and lists as a build of all nine gives them, by delta too.

    Only the counts those three rank by are kept; popular stays among them,
    so the session route's fallback (and the visit_blend row) is the same.
    """
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    fewer = ("llr", "popular", "transitions")
    for step, seen in enumerate((files[:50], files[:80])):
        every = shop_with(source, tmp_path / "every", seen, catalogue)
        every = replace(every, snapshots=replace(every.snapshots, gate_algorithm="llr"))
        some = shop_with(source, tmp_path / "some", seen, catalogue)
        some = replace(
            some,
            algorithms=replace(some.algorithms, compute=fewer),
            snapshots=replace(some.snapshots, gate_algorithm="llr"),
            experiment=replace(some.experiment, variants=some.experiment.variants[:1]),
        )
        build.build(every)
        assert build.build(some).counting == ("full" if step == 0 else "incremental")
        whole, part = contents(every), contents(some)
        assert part["itemitem"] == [row for row in whole["itemitem"] if row[1] in fewer]
        scored = [(row[0], *row[2:]) for row in whole["evaluation"] if row[2] in (*fewer, "visit_blend")]
        assert [(row[0], *row[2:]) for row in part["evaluation"]] == scored  # all but the parameters
        assert [row[1] for row in scored] == [*fewer, "visit_blend"]
        assert sorted(set(part["lists.arrow"].column("algorithm").to_pylist())) == list(fewer)
        assert part["served"].num_rows == len(part["itemitem"])
        for table in ("item_counts", "tenant_sessions", "session_items"):
            assert part[table] == whole[table], table
        with warehouse.connect(some.warehouse, read_only=True) as connection:
            (counted,) = connection.execute("SELECT counted_with FROM builds ORDER BY finished_at DESC").fetchone()
            parts = {row[0] for row in connection.execute("SELECT part FROM kept_files").fetchall()}
        assert json.loads(counted)["matrices"] == ["pairs", "next"]
        assert {part.split("_")[0] for part in parts} <= {"pairs", "next", "training", "catalogue", "test", "lists"}
    by_sql = replace(some, warehouse=tmp_path / "sql" / "warehouse.duckdb")
    by_sql = replace(by_sql, snapshots=replace(some.snapshots, root=tmp_path / "sql" / "snapshots"))
    build.build(by_sql, pairs="sql")
    readable = contents(by_sql)
    assert readable["itemitem"] == part["itemitem"]
    assert len(readable["evaluation"]) == len(part["evaluation"])
    for by_sql_row, row in zip(readable["evaluation"], part["evaluation"], strict=True):
        text, numbers = [v for v in row[2:] if isinstance(v, str)], [v for v in row[2:] if not isinstance(v, str)]
        assert [v for v in by_sql_row[2:] if isinstance(v, str)] == text
        numbers_by_sql = [v for v in by_sql_row[2:] if not isinstance(v, str)]
        assert numbers_by_sql == pytest.approx(numbers, rel=1e-12, abs=1e-15)  # sums in another order


@pytest.mark.slow
def test_the_training_counts_follow_the_cut_off_wherever_it_moves(hours, tmp_path):
    """The evaluation's training counts, kept and changed by delta, equal counting again as its cut-off moves.

    Later, earlier (before every event: nothing to train on), then fixed by
    the config, with a look-back window that moves with the training's
    newest event.
    """
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    first = shop_with(source, tmp_path / "shop", files[:40], catalogue, look_back_days=2)
    build.build(first)
    with warehouse.connect(first.warehouse, read_only=True) as connection:
        newest = connection.execute("SELECT max(ts) FROM events").fetchone()[0]
    for step, (seen, evaluated) in enumerate(
        [
            (60, {"test_days": 3}),
            (70, {"test_days": 1, "cutoff": newest - dt.timedelta(hours=6)}),
            (90, {"test_days": 1}),
        ]
    ):
        configs = []
        for folder in ("shop", f"scratch-{step}"):
            shop = shop_with(source, tmp_path / folder, files[:seen], catalogue, look_back_days=2)
            configs.append(replace(shop, evaluation=replace(shop.evaluation, **evaluated)))
        incremental, scratch = configs
        assert build.build(incremental, force=True).counting == "incremental"  # a cut-off moved back may score worse
        build.build(scratch)
        assert_same(contents(incremental), contents(scratch))


@pytest.mark.slow
@pytest.mark.parametrize("point", crashpoints.POINTS)
def test_a_build_killed_at_any_step_then_run_again_equals_one_from_scratch(hours, tmp_path, point):
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    cfg = shop_with(source, tmp_path / "shop", files[:80], catalogue)
    assert run_cli("build", "--config", str(cfg.source)).returncode == 0
    shop_with(source, tmp_path / "shop", files[:100], catalogue)  # 20 more hours
    store = tmp_path / "shop" / "warehouse.store"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "build", "--config", str(cfg.source)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ETALAGE_PAUSE_AT": point},
    )
    for line in process.stderr:
        if line.startswith(f"paused at {point}"):
            break
    else:
        pytest.fail(f"the build never reached {point}: exit {process.wait()}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    again = run_cli("build", "--config", str(cfg.source))
    assert again.returncode == 0, again.stderr
    scratch = shop_with(source, tmp_path / "scratch", files[:100], catalogue)
    assert run_cli("build", "--config", str(scratch.source)).returncode == 0
    assert_same(contents(cfg), contents(scratch))
    # What the killed build wrote is gone or named by the warehouse: nothing piles up in the store.
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        named = {row[0] for row in connection.execute("SELECT path FROM store_files").fetchall()}
    on_disk = {str(p.relative_to(tmp_path / "shop")) for kind in store.iterdir() for p in kind.iterdir()}
    assert on_disk == named


@pytest.mark.slow
def test_analysts_keep_querying_while_builds_replace_the_warehouse(hours, tmp_path):
    """A read-only connection held open across two builds keeps its answers; the store keeps its files."""
    source, files = hours
    catalogue = pq.read_table(source / "catalogue.parquet").to_pylist()
    cfg = shop_with(source, tmp_path / "shop", files[:40], catalogue)
    build.build(cfg)
    analyst = warehouse.connect(cfg.warehouse, read_only=True)
    query = "SELECT count(*), sum(rank) FROM itemitem UNION ALL SELECT count(*), 0 FROM events"
    before = analyst.execute(query).fetchall()
    for more in (60, 80):
        shop_with(source, tmp_path / "shop", files[:more], catalogue)
        result = run_cli("build", "--config", str(cfg.source))
        assert result.returncode == 0, result.stderr
    assert analyst.execute(query).fetchall() == before
    analyst.close()
    now = run_cli("sql", query, "--config", str(cfg.source), "--format", "json")  # another process: the new file
    assert now.returncode == 0, now.stderr
    assert [tuple(row.values()) for row in json.loads(now.stdout)] != before
