"""Bad input stops the build with a clear message and exit code, and the live warehouse is untouched."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import config
from engine.publish import warehouse
from tests.conftest import copy_built, copy_shop, divolte_events, run_cli, sha256, write_shop_folder

EXIT_BAD_INPUT, EXIT_BUSY, EXIT_UNREADABLE = 3, 4, 5


def tiny_shop(folder: Path, source: str) -> Path:
    """A tiny shop built once from its ``source`` copy of the events, so there is a live warehouse to protect."""
    events = divolte_events([{"session": f"s{i % 7}", "product": f"100000{i % 5}"} for i in range(60)])
    write_shop_folder(folder, events, {"nl": [f"100000{i}" for i in range(5)]})
    if source == "parquet":
        set_config(folder, 'avro = ["events/avro/**/*.avro"]', 'parquet = ["events/parquet/*.parquet"]')
    first = run_cli("build", "--config", str(folder / "etalage.toml"))
    assert first.returncode == 0, first.stderr
    return folder


@pytest.fixture(scope="module")
def built_avro(tmp_path_factory) -> Path:
    return tiny_shop(tmp_path_factory.mktemp("avro-shop"), "avro")


@pytest.fixture(scope="module")
def built_parquet(tmp_path_factory) -> Path:
    return tiny_shop(tmp_path_factory.mktemp("parquet-shop"), "parquet")


@pytest.fixture
def shop(built_avro, tmp_path) -> Path:
    """A copy of the tiny shop, built once from its Avro events, for this test alone."""
    return copy_built(built_avro, tmp_path)


@pytest.fixture
def parquet_shop(built_parquet, tmp_path) -> Path:
    """The same tiny shop, built once from its Parquet copy of the events."""
    return copy_built(built_parquet, tmp_path)


def new_hour(shop: Path) -> Path:
    """A copy of the shop's Avro file as a new hour's file (not ingested yet), to damage."""
    ingested = next((shop / "events" / "avro").rglob("*.avro"))
    copy = shop / "events" / "avro" / "2026" / "11" / "01" / "13" / "part-0.avro"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(ingested.read_bytes())
    return copy


def fails(shop: Path, code: int, *fragments: str) -> str:
    """Run a build that must fail with ``code``, mention every fragment, and leave the warehouse alone."""
    live = shop / "warehouse.duckdb"
    before = sha256(live)
    result = run_cli("build", "--config", str(shop / "etalage.toml"))
    assert result.returncode == code, result.stderr
    message = result.stderr
    for fragment in fragments:
        assert fragment in message, message
    assert "Traceback" not in message
    assert sha256(live) == before
    assert sorted(p.name for p in shop.iterdir() if p.name.startswith(".")) == []
    return message


def set_config(shop: Path, old: str, new: str) -> None:
    path = shop / "etalage.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_truncated_avro_file(shop):
    avro = new_hour(shop)
    avro.write_bytes(avro.read_bytes()[:-20])  # the last block loses its tail, as when a copy is cut off
    fails(shop, EXIT_BAD_INPUT, str(avro), "truncated Avro file")


def test_file_that_is_not_avro(shop):
    bogus = shop / "events" / "avro" / "2026" / "11" / "01" / "13" / "part-0.avro"
    bogus.parent.mkdir(parents=True)
    bogus.write_text("this is not avro")
    fails(shop, EXIT_BAD_INPUT, str(bogus), "not a readable Avro container file")


def test_parquet_file_with_a_missing_column(parquet_shop):
    events = pq.read_table(parquet_shop / "events" / "parquet" / "part-0.parquet")
    broken = parquet_shop / "events" / "parquet" / "part-1.parquet"
    pq.write_table(events.drop_columns(["location"]), broken)
    fails(parquet_shop, EXIT_BAD_INPUT, str(broken), "no column 'location'", "events.mapping.product_id")


def test_parquet_files_with_a_column_of_another_type(parquet_shop):
    events = pq.read_table(parquet_shop / "events" / "parquet" / "part-0.parquet")
    for part in ("part-1", "part-2"):  # checked against each other: the first new file sets the type
        pq.write_table(events, parquet_shop / "events" / "parquet" / f"{part}.parquet")
    broken = parquet_shop / "events" / "parquet" / "part-2.parquet"
    pq.write_table(
        events.set_column(events.schema.get_field_index("sessionId"), "sessionId", pa.array(range(events.num_rows))),
        broken,
    )
    fails(parquet_shop, EXIT_BAD_INPUT, str(broken), "'sessionid' is int64 here but string")


def test_truncated_parquet_file(parquet_shop):
    path = parquet_shop / "events" / "parquet" / "part-1.parquet"
    path.write_bytes((parquet_shop / "events" / "parquet" / "part-0.parquet").read_bytes()[:500])
    fails(parquet_shop, EXIT_BAD_INPUT, str(path), "not a readable Parquet file")


def test_an_ingested_file_that_changed_stops_the_build_until_full(shop):
    """Events are stored once: a rewritten file is named, with the way out, and nothing changes until --full."""
    avro = next((shop / "events" / "avro").rglob("*.avro"))
    avro.write_bytes(avro.read_bytes()[:-20])
    fails(shop, EXIT_BAD_INPUT, str(avro), "changed since build", "bytes then", "etalage build --full")
    full = run_cli("build", "--full", "--config", str(shop / "etalage.toml"))
    assert full.returncode == EXIT_BAD_INPUT and "truncated Avro file" in full.stderr  # --full reads it again


def test_an_ingested_file_rewritten_to_the_same_size_is_told_by_its_fingerprint(parquet_shop):
    path = parquet_shop / "events" / "parquet" / "part-0.parquet"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # inside the footer: the same size, other content
    path.write_bytes(bytes(data))
    fails(parquet_shop, EXIT_BAD_INPUT, str(path), "its content differs", "etalage build --full")


def test_a_touched_ingested_file_is_not_a_change(parquet_shop):
    path = parquet_shop / "events" / "parquet" / "part-0.parquet"
    path.write_bytes(path.read_bytes())  # a new modification time, the same content
    again = run_cli("build", "--config", str(parquet_shop / "etalage.toml"))
    assert again.returncode == 0, again.stderr
    assert "counted incrementally: 0 new event files" in again.stderr


@pytest.mark.slow
def test_an_ingested_file_that_went_away_stops_the_build_until_full(shop):
    avro = next((shop / "events" / "avro").rglob("*.avro"))
    extra = new_hour(shop)
    assert run_cli("build", "--config", str(shop / "etalage.toml")).returncode == 0
    extra.unlink()
    fails(shop, EXIT_BAD_INPUT, "part-0.avro: ingested by build", "no longer found", "etalage build --full")
    full = run_cli("build", "--full", "--config", str(shop / "etalage.toml"))
    assert full.returncode == 0, full.stderr
    assert "counted everything again (full): --full" in full.stderr
    with warehouse.connect(shop / "warehouse.duckdb", read_only=True) as connection:
        files = connection.execute("SELECT path FROM ingested_files").fetchall()
    assert files == [(str(avro.relative_to(shop)),)]


def test_empty_directory(shop):
    (shop / "empty").mkdir()
    set_config(shop, '"events/avro/**/*.avro"', '"empty/**/*.avro"')
    fails(shop, EXIT_BAD_INPUT, "no event files match", "empty/**/*.avro", "events.avro")


def test_mapping_that_is_not_sql(shop):
    (shop / "etalage.toml").write_text(
        (shop / "etalage.toml").read_text() + '\n[events.mapping]\nproduct_id = "regexp_extract(location, "\n'
    )
    fails(shop, EXIT_BAD_INPUT, "events.mapping.product_id is not a valid SQL expression")


def test_mapping_that_duckdb_cannot_run(shop):
    (shop / "etalage.toml").write_text(
        (shop / "etalage.toml").read_text() + '\n[events.mapping]\ntenant = "no_such_function(location)"\n'
    )
    fails(shop, EXIT_BAD_INPUT, "events.mapping.tenant fails on the avro files", "no_such_function")


def test_mapping_that_names_a_missing_column(shop):
    (shop / "etalage.toml").write_text(
        (shop / "etalage.toml").read_text() + '\n[events.mapping]\nsession_id = "visitSessionId"\n'
    )
    fails(shop, EXIT_BAD_INPUT, "no column 'visitsessionid'", "events.mapping.session_id")


def test_unknown_config_key(shop):
    set_config(shop, "[algorithms]", "[algorithms]\ntopn = 5")
    fails(shop, EXIT_BAD_INPUT, "unknown config key algorithms.topn")


def test_bad_parameter_value(shop):
    set_config(shop, "[algorithms]", "[algorithms]\ntop_n = -3")
    fails(shop, EXIT_BAD_INPUT, "algorithms.top_n must be an integer >= 1")


@pytest.mark.parametrize("value", ["lots", "12 parsecs"])
def test_memory_limit_that_duckdb_cannot_read(shop, value):
    set_config(shop, "[warehouse]", f'[warehouse]\nmemory_limit = "{value}"')
    fails(shop, EXIT_BAD_INPUT, f"warehouse.memory_limit = '{value}' is not a size DuckDB reads")


def test_memory_limit_bounds_the_builds_duckdb_and_changes_no_row(shop):
    """The limit reaches DuckDB; a build held below what its queries would take spills and writes the same rows."""
    with warehouse.connect(memory_limit="100MB") as connection:
        assert connection.execute("SELECT current_setting('memory_limit')").fetchone() == ("95.3 MiB",)
    query = "SELECT * FROM itemitem ORDER BY ALL"
    with warehouse.connect(shop / "warehouse.duckdb", read_only=True) as connection:
        before = connection.execute(query).fetchall()
    set_config(shop, "[warehouse]", '[warehouse]\nmemory_limit = "20MB"')
    built = run_cli("build", "--full", "--config", str(shop / "etalage.toml"))
    assert built.returncode == 0, built.stderr
    with warehouse.connect(shop / "warehouse.duckdb", read_only=True) as connection:
        assert connection.execute(query).fetchall() == before


@pytest.mark.parametrize("value", ["0", "11", "2.5", "true"])
def test_sr_window_out_of_range(shop, value):
    set_config(shop, "[algorithms]", f"[algorithms]\nsr_window = {value}")
    fails(shop, EXIT_BAD_INPUT, "algorithms.sr_window must be an integer")


def test_auto_gate_without_a_holdout(shop):
    """auto serves the best on the held-out days; with none it has nothing to choose by, and says so."""
    config = shop / "etalage.toml"
    config.write_text(config.read_text() + "[evaluation]\ntest_days = 0\n")
    fails(shop, EXIT_BAD_INPUT, 'gate_algorithm = "auto"', "evaluation.test_days is 0")
    config.write_text(config.read_text() + '[snapshots]\ngate_algorithm = "llr"\n')
    built = run_cli("build", "--config", str(config))
    assert built.returncode == 0, built.stderr


@pytest.mark.slow
def test_an_algorithm_served_but_not_computed(shop):
    """What the gate or a variant serves, or falls back to, must be among the algorithms the builds compute."""
    set_config(shop, "[algorithms]\n", '[algorithms]\ncompute = ["llr"]\n')
    fails(shop, EXIT_BAD_INPUT, "experiment.variants[0].fallback is 'popular'", "algorithms.compute does not name")
    set_config(shop, 'compute = ["llr"]', 'compute = ["llr", "llr"]')
    fails(shop, EXIT_BAD_INPUT, "algorithms.compute names an algorithm twice")
    set_config(shop, 'compute = ["llr", "llr"]', "compute = []")
    fails(shop, EXIT_BAD_INPUT, "algorithms.compute")
    set_config(shop, "compute = []", 'compute = ["jaccard", "popular"]')
    fails(shop, EXIT_BAD_INPUT, "experiment.variants[0].algorithm is 'llr'", "algorithms.compute does not name")
    set_config(shop, 'compute = ["jaccard", "popular"]', 'compute = ["llr", "popular"]')
    built = run_cli("build", "--config", str(shop / "etalage.toml"))
    assert built.returncode == 0, built.stderr
    assert "algorithms.compute needs the counts ['pairs'], build" in built.stderr


def test_a_visit_blend_variant_falls_back_to_popular_only(shop):
    """A variant that serves the session route's blend takes its fallback too: naming another is refused."""
    path = shop / "etalage.toml"
    path.write_text(
        path.read_text() + '[[experiment.variants]]\nname = "visit"\nalgorithm = "visit_blend"\nfallback = "llr"\n'
    )
    fails(shop, EXIT_BAD_INPUT, "experiment.variants[0] serves visit_blend", "its fallback cannot be 'llr'")
    set_config(shop, 'fallback = "llr"', 'fallback = ""')
    fails(shop, EXIT_BAD_INPUT, "its fallback cannot be 'none'")
    set_config(shop, 'fallback = ""', 'fallback = "popular"')
    assert config.load(shop / "etalage.toml").experiment.variants[0].algorithm == "visit_blend"


def test_missing_config_file(tmp_path):
    result = run_cli("build", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == EXIT_BAD_INPUT
    assert "does not exist" in result.stderr


def test_missing_catalogue(shop):
    (shop / "catalogue.parquet").unlink()
    fails(shop, EXIT_BAD_INPUT, "catalogue file does not exist")


def test_catalogue_with_duplicate_products(shop):
    table = pq.read_table(shop / "catalogue.parquet")
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), shop / "catalogue.parquet")
    fails(shop, EXIT_BAD_INPUT, "appears more than once")


def test_unreadable_existing_warehouse_is_kept(shop):
    (shop / "warehouse.duckdb").write_bytes(b"not a duckdb file" * 1000)
    fails(shop, EXIT_UNREADABLE, "cannot be opened as a DuckDB warehouse", "move it away")


def test_second_build_while_one_holds_the_lock(shop):
    with open(shop / "warehouse.duckdb.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fails(shop, EXIT_BUSY, "another build is running")
    assert run_cli("build", "--config", str(shop / "etalage.toml")).returncode == 0


def test_leftover_from_a_killed_build_is_cleaned_up(shop):
    leftover = shop / ".warehouse.duckdb.building"
    leftover.write_bytes(b"half a warehouse")
    result = run_cli("build", "--config", str(shop / "etalage.toml"))
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("after_seconds", "still_running"), [(0.0, True), (0.8, True), (2.5, None)])
def test_a_build_killed_midway_leaves_the_live_warehouse_intact(small_shop, tmp_path, after_seconds, still_running):
    """SIGKILL a real build once its new warehouse file exists (then later): the live one is untouched."""
    import signal
    import subprocess
    import sys
    import time

    config = str(copy_shop(small_shop, tmp_path))
    assert run_cli("build", "--config", config).returncode == 0
    live = tmp_path / "warehouse.duckdb"
    before = sha256(live)

    building = tmp_path / ".warehouse.duckdb.building"
    process = subprocess.Popen(  # --full: all the work of a first build, so there is time to kill it
        [sys.executable, "-m", "engine", "build", "--full", "--config", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not building.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(after_seconds)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()

    if still_running:
        assert killed, "the build finished before it could be killed; the test needs a bigger shop"
    # The live file is byte-for-byte the old one, or (the build got past its os.replace before the kill,
    # and was then publishing the snapshot) the whole new warehouse, with the second build recorded.
    with warehouse.connect(live, read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM itemitem").fetchone()[0] > 0
        builds = connection.execute("SELECT count(*) FROM builds").fetchone()[0]
    assert sha256(live) == before or builds == 2
    assert run_cli("build", "--config", config).returncode == 0
    assert not building.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
