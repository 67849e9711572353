"""Events, catalogue and exposures on an object store: a build from s3:// or gs:// equals a build from the same files on disk.

A real S3 API (moto in server mode on 127.0.0.1, started by the test) holds
a small shop's hourly Parquet events (``date=/hour=`` partitions), its Avro
events, its catalogue and an exposure file. ``etalage build`` runs against
the s3:// locations as cron would, and its lists, counts and evaluation must
equal a build of the same files from local paths; one more hour is then
uploaded and only that object is read; a rewritten object stops the build
with the ledger's error. The same files on Google Cloud Storage's emulator
(gcp-storage-emulator, in a process of its own) give the same lists through
gs://, which DuckDB reads through pyarrow's filesystem. Bad locations (a
store that does not answer, no credentials, no such bucket, a scheme
etalage does not read, HDFS without libhdfs) each stop the build with the
location's name, exit 3, and the live warehouse unchanged.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from engine import build, config
from engine.example import generator
from engine.ingest import divolte, exposures, locations
from engine.publish import warehouse
from tests.conftest import free_port, run_cli, sha256
from tests.test_incremental import assert_same, contents

SHOP = generator.ShopSpec(products=240, brands=20, events=9_000, days=5, seed=3)
EXIT_BAD_INPUT = 3


@dataclass(frozen=True)
class Store:
    """The running object store: its endpoint, and a client to put objects with."""

    endpoint: str
    client: pafs.S3FileSystem


@pytest.fixture(scope="module")
def store() -> Store:
    """moto's S3 server on a free loopback port, with the AWS environment pointing at it while the module runs."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (the `test` extra has it)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as error:  # noqa: BLE001 - werkzeug or a port problem: the store cannot run here
        pytest.skip(f"the local object store (moto) did not start: {type(error).__name__}: {error}")
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        environment = {
            "AWS_ACCESS_KEY_ID": "etalage-test",
            "AWS_SECRET_ACCESS_KEY": "etalage-test-secret",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        for name, value in environment.items():
            patch.setenv(name, value)
        client = pafs.S3FileSystem(
            access_key="etalage-test",
            secret_key="etalage-test-secret",
            region="us-east-1",
            endpoint_override=f"{host}:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        client.create_dir("shop")
        yield Store(endpoint, client)
    server.stop()


@pytest.fixture(scope="module")
def gcs() -> pafs.GcsFileSystem:
    """Google Cloud Storage's emulator on a free loopback port, bucket ``shop``; STORAGE_EMULATOR_HOST names it meanwhile."""
    pytest.importorskip(
        "gcp_storage_emulator", reason="gcp-storage-emulator is not installed (the `test` extra has it)"
    )
    host = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", host.split(":")[1],
               "--in-memory", "--default-bucket", "shop", "--quiet"]  # fmt: skip
    emulator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=1).close()
                break
            except OSError:
                if emulator.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("the Google Cloud Storage emulator did not start")
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(locations.GCS_EMULATOR, host)
            yield pafs.GcsFileSystem(anonymous=True, endpoint_override=host, scheme="http")
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A generated shop whose Parquet events are split into hourly ``date=YYYY-MM-DD/hour=HH`` partitions."""
    folder = tmp_path_factory.mktemp("object-shop")
    generator.write_shop(generator.generate(SHOP), folder, ("avro", "parquet"), images=False)
    events = pq.read_table(folder / "events" / "parquet").select(divolte.ARROW_SCHEMA.names)
    hours = pc.strftime(events.column("timestamp"), "date=%Y-%m-%d/hour=%H")
    for hour in sorted(set(hours.to_pylist())):
        target = folder / "events" / "hourly" / hour / "events.parquet"
        divolte.write_parquet(events.filter(pc.equal(hours, hour)), target)
    shutil.rmtree(folder / "events" / "parquet")
    exposure = pa.Table.from_pylist(
        [
            {
                "exposure_id": "e1",
                "ts": events.column("timestamp")[0].as_py().replace(tzinfo=None),
                "visitor": "v1",
                "tenant": "nl",
                "product_id": "1",
                "experiment": "recommendations",
                "variant": "llr",
                "algorithm": "llr",
                "snapshot": "s1",
                "shown": ["2", "3"],
            }
        ],
        schema=exposures.SCHEMA,
    )
    (folder / "exposures" / "date=2026-11-01").mkdir(parents=True)
    pq.write_table(exposure, folder / "exposures" / "date=2026-11-01" / "exposures-a.parquet")
    return folder


def hour_files(shop: Path, fmt: str) -> list[Path]:
    """The shop's event files of one format, oldest hour first."""
    folder, suffix = ("hourly", "parquet") if fmt == "parquet" else ("avro", "avro")
    return sorted((shop / "events" / folder).rglob(f"*.{suffix}"))


def upload(client: pafs.FileSystem, shop: Path, files: list[Path]) -> None:
    """Put files of the shop's folder into the bucket ``shop`` under the same relative names."""
    for path in files:
        key = f"shop/{path.relative_to(shop).as_posix()}"
        with client.open_output_stream(key) as stream:
            stream.write(path.read_bytes())


def copy(shop: Path, folder: Path, files: list[Path]) -> None:
    """Copy files of the shop's folder into ``folder`` under the same relative names."""
    for path in files:
        (folder / path.relative_to(shop)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, folder / path.relative_to(shop))


def config_file(folder: Path, root: str, fmt: str, look_back_days: int = 0) -> Path:
    """An etalage.toml in ``folder`` (warehouse and snapshots there) reading the shop's files under ``root``."""
    folder.mkdir(parents=True, exist_ok=True)
    pattern = f"{root}/events/hourly/**/*.parquet" if fmt == "parquet" else f"{root}/events/avro/**/*.avro"
    text = config.example_toml(fmt)
    for old, new in (
        ('path = "catalogue.parquet"', f'path = "{root}/catalogue.parquet"'),
        (f'{fmt} = ["events/{fmt}/**/*.{fmt}"]', f'{fmt} = ["{pattern}"]'),
        ('exposures = "exposures"', f'exposures = "{root}/exposures"'),
        ("top_n = 20", "top_n = 10"),
        ("min_support = 2", "min_support = 1"),
        ("test_days = 7", "test_days = 1"),
        ("look_back_days = 0", f"look_back_days = {look_back_days}"),
    ):
        assert old in text
        text = text.replace(old, new)
    (folder / "etalage.toml").write_text(text)
    return folder / "etalage.toml"


def built(path: Path) -> None:
    result = run_cli("build", "--config", str(path))
    assert result.returncode == 0, result.stderr


def ledger(path: Path) -> list[tuple]:
    """The warehouse's ledger: (path, build id) of every ingested file, by build."""
    with warehouse.connect(path.parent / "warehouse.duckdb", read_only=True) as connection:
        return connection.execute("SELECT path, build_id FROM ingested_files ORDER BY build_id, path").fetchall()


@pytest.mark.slow
def test_a_build_from_s3_equals_a_build_from_disk_then_reads_only_the_new_hour(store, shop, tmp_path):
    files = hour_files(shop, "parquet")
    upload(
        store.client, shop, [shop / "catalogue.parquet", *files[:-1], *sorted((shop / "exposures").rglob("*.parquet"))]
    )
    remote = config_file(tmp_path / "remote", "s3://shop", "parquet")
    built(remote)
    local_shop = tmp_path / "local-shop"
    copy(shop, local_shop, [shop / "catalogue.parquet", *files[:-1], *sorted((shop / "exposures").rglob("*.parquet"))])
    local = config_file(tmp_path / "local", str(local_shop), "parquet")
    built(local)
    assert_same(contents(config.load(remote)), contents(config.load(local)))
    first = ledger(remote)
    assert len(first) == len(files) - 1 and all(path.startswith("s3://shop/events/hourly/date=") for path, _ in first)
    with warehouse.connect(remote.parent / "warehouse.duckdb", read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM exposures").fetchone()[0] == 1

    upload(store.client, shop, files[-1:])
    copy(shop, local_shop, files[-1:])
    result = run_cli("build", "--config", str(remote))
    assert result.returncode == 0, result.stderr
    assert "counted incrementally: 1 new event files" in result.stderr
    added = [path for path, build_id in ledger(remote) if (path, build_id) not in first]
    assert added == [f"s3://shop/{files[-1].relative_to(shop).as_posix()}"]
    built(local)
    assert_same(contents(config.load(remote)), contents(config.load(local)))

    live = sha256(remote.parent / "warehouse.duckdb")
    rewritten = pq.read_table(files[0]).slice(1)  # an hour rewritten: its first event gone
    with store.client.open_output_stream(f"shop/{files[0].relative_to(shop).as_posix()}") as stream:
        pq.write_table(rewritten, stream)
    changed = run_cli("build", "--config", str(remote))
    assert changed.returncode == EXIT_BAD_INPUT
    assert f"s3://shop/{files[0].relative_to(shop).as_posix()}: changed since build" in changed.stderr
    assert sha256(remote.parent / "warehouse.duckdb") == live


@pytest.mark.slow
def test_avro_events_on_s3_give_the_lists_of_the_same_files_on_disk(store, shop, tmp_path):
    files = hour_files(shop, "avro")
    upload(store.client, shop, [shop / "catalogue.parquet", *files])
    remote = config_file(tmp_path / "remote", "s3://shop", "avro")
    built(remote)
    local = config_file(tmp_path / "local", str(shop), "avro")
    built(local)
    assert_same(contents(config.load(remote)), contents(config.load(local)))


@pytest.mark.slow
def test_events_catalogue_and_exposures_on_gs_give_the_lists_of_the_same_files_on_disk(gcs, shop, tmp_path):
    files = {"parquet": hour_files(shop, "parquet"), "avro": hour_files(shop, "avro")}
    exposed = sorted((shop / "exposures").rglob("*.parquet"))
    upload(gcs, shop, [shop / "catalogue.parquet", *files["parquet"], *files["avro"], *exposed])
    for fmt, events in files.items():
        remote = config_file(tmp_path / f"remote-{fmt}", "gs://shop", fmt)
        built(remote)
        local = config_file(tmp_path / f"local-{fmt}", str(shop), fmt)
        built(local)
        assert_same(contents(config.load(remote)), contents(config.load(local)))
        paths = [path for path, _ in ledger(remote)]
        assert paths == [f"gs://shop/{path.relative_to(shop).as_posix()}" for path in events]
        with warehouse.connect(remote.parent / "warehouse.duckdb", read_only=True) as connection:
            assert connection.execute("SELECT count(*) FROM exposures").fetchone()[0] == 1


@pytest.mark.slow
@pytest.mark.parametrize("cutoff", [False, True])
def test_the_look_back_window_leaves_older_partitions_unread_and_the_lists_as_they_were(shop, tmp_path, cutoff):
    """Pruned by path: the same files without ``date=``/``hour=`` folders are all read, and give the same lists.

    The evaluation's training window must be read too: a day before the newest event, or before a fixed cut-off.
    """
    files = hour_files(shop, "parquet")
    flat = tmp_path / "flat-shop"
    for path in files:
        name = "-".join(part.split("=")[1] for part in path.relative_to(shop / "events" / "hourly").parent.parts)
        (flat / "events" / "hourly").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, flat / "events" / "hourly" / f"{name}.parquet")
    shutil.copy2(shop / "catalogue.parquet", flat / "catalogue.parquet")
    partitioned = config_file(tmp_path / "partitioned", str(shop), "parquet", look_back_days=1)
    everything = config_file(tmp_path / "flat", str(flat), "parquet", look_back_days=1)
    split = files[3 * len(files) // 4].relative_to(shop / "events" / "hourly").parts[0].split("=")[1]
    evaluation = f'test_days = 1\ncutoff = "{split}"' if cutoff else "test_days = 1"
    for path in (partitioned, everything):
        path.write_text(path.read_text().replace("test_days = 1", evaluation))
    partitioned, everything = config.load(partitioned), config.load(everything)
    pruned, read = build.build(partitioned), build.build(everything)
    assert read.before_window == 0 and read.files == {"parquet": len(files)}
    assert len(files) // 4 < pruned.before_window < len(files)
    assert pruned.before_window + pruned.files["parquet"] == len(files)
    kept, all_of_them = contents(partitioned), contents(everything)
    assert kept.pop("ingest_stats") != all_of_them.pop("ingest_stats")  # fewer events read
    assert_same(kept, all_of_them)


@pytest.fixture(scope="module")
def live_shop(store, shop, tmp_path_factory) -> Path:
    """A shop built once from disk (its config is ``etalage.toml``): what a bad location must leave as it is."""
    path = config_file(tmp_path_factory.mktemp("live"), str(shop), "avro")
    built(path)
    upload(store.client, shop, hour_files(shop, "avro")[:2])
    return path


def refused(
    live_shop: Path, old: str, new: str, environment: dict[str, str | None], *fragments: str, full: bool = False
) -> None:
    """The live shop's config with ``old`` made ``new`` stops the build naming ``fragments``; nothing changes."""
    path = live_shop.with_name("changed.toml")
    text = live_shop.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    live = sha256(path.parent / "warehouse.duckdb")
    current = (path.parent / "snapshots" / "current").resolve()
    result = run_cli("build", *(["--full"] if full else []), "--config", str(path), environment=environment)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert sha256(path.parent / "warehouse.duckdb") == live
    assert (path.parent / "snapshots" / "current").resolve() == current


def on_store(shop: Path, bucket: str = "s3://shop") -> tuple[str, str]:
    """The change that moves the live shop's Avro events to ``bucket``."""
    return f'avro = ["{shop}/events/avro/**/*.avro"]', f'avro = ["{bucket}/events/avro/**/*.avro"]'


@pytest.mark.slow
def test_a_store_that_does_not_answer_is_named(live_shop, shop):
    nobody = f"http://127.0.0.1:{free_port()}"
    refused(live_shop, *on_store(shop), {"AWS_ENDPOINT_URL": nobody}, "s3://shop/events/avro/**/*.avro: cannot list it")


@pytest.mark.slow
def test_a_gs_store_that_does_not_answer_is_named(live_shop, shop):
    nobody = f"127.0.0.1:{free_port()}"  # retried for locations.GCS_PATIENCE, then given up
    environment = {locations.GCS_EMULATOR: nobody}
    refused(live_shop, *on_store(shop, "gs://shop"), environment, "gs://shop/events/avro/**/*.avro: cannot list it")


def test_missing_credentials_are_named(live_shop, shop):
    refused(
        live_shop,
        *on_store(shop),
        {"AWS_ACCESS_KEY_ID": None},
        "s3://shop/events/avro/**/*.avro: no credentials for s3:// (set AWS_ACCESS_KEY_ID",
    )


def test_a_bucket_that_does_not_exist_is_named(live_shop, shop):
    refused(
        live_shop,
        *on_store(shop, "s3://no-such-shop"),
        {},
        "s3://no-such-shop/events/avro/**/*.avro: bucket 'no-such-shop' does not exist",
    )


def test_a_scheme_etalage_does_not_read_is_named(live_shop, shop):
    refused(live_shop, *on_store(shop, "s4://shop"), {}, "events.avro = 's4://shop/events/avro/**/*.avro'")


def test_a_truncated_object_is_named_by_its_ends_alone(store, live_shop, shop):
    """A copy cut off inside a block does not end with the sync marker: found before any event is read."""
    whole = hour_files(shop, "avro")[0].read_bytes()
    key = "shop/events/avro/2099/01/01/00/cut.avro"
    with store.client.open_output_stream(key) as stream:
        stream.write(whole[:-20])
    try:
        refused(live_shop, *on_store(shop), {}, f"s3://{key}: truncated Avro file", full=True)
    finally:
        store.client.delete_file(key)


def test_hdfs_without_libhdfs_is_named_and_one_name_node_is_asked_for():
    cases = {
        r"^hdfs://namenode:8020/e\.parquet: cannot connect to it \(": [
            Path("local.parquet"),
            "hdfs://namenode:8020/e.parquet",
        ],
        r"^hdfs://a:1/e\.parquet: hdfs:// locations on 2 name nodes": ["hdfs://b:1/f.parquet", "hdfs://a:1/e.parquet"],
    }
    for message, named in cases.items():
        with duckdb.connect() as connection, pytest.raises(locations.Unreachable, match=message):
            locations.duckdb_reads(connection, named).__enter__()


@pytest.mark.slow
def test_spark_without_hadoop_aws_names_the_s3_location_and_what_it_needs(store, shop, tmp_path):
    """Spark reads s3:// as s3a:// through hadoop-aws, which pyspark does not bundle: a clear error, nothing written."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (the `spark` and `test` extras have it)")
    from engine.spark import runner

    files = hour_files(shop, "parquet")
    upload(store.client, shop, [shop / "catalogue.parquet", *files[:3]])
    remote = config.load(config_file(tmp_path / "remote", "s3://shop", "parquet"))
    try:
        spark = runner.session("local[1]")
    except runner.SparkUnavailable as error:
        pytest.skip(f"Spark cannot start here: {error}")
    try:
        with pytest.raises(config.ConfigError) as refused:
            runner.build(remote, tmp_path / "tables", spark=spark)
    finally:
        spark.stop()
    assert str(refused.value).startswith(f"s3://shop/{files[0].relative_to(shop).as_posix()}: Spark has no filesystem")
    assert "hadoop-aws" in str(refused.value)
    assert not [name for name in ("tables", "tables.lock", "tables.building") if (tmp_path / name).exists()]


def test_file_uris_are_paths_and_remote_ones_stay_as_written(tmp_path):
    raw = {
        "catalogue": {"path": f"file://{tmp_path}/catalogue.parquet"},
        "events": {"parquet": ["s3://shop/events/**/*.parquet", "file:///data/events/*.parquet"]},
        "serving": {"exposures": "gs://shop/exposures"},
    }
    parsed = config.parse(raw, base=tmp_path)
    assert parsed.catalogue == tmp_path / "catalogue.parquet"
    assert parsed.events.parquet == ("s3://shop/events/**/*.parquet", "/data/events/*.parquet")
    assert parsed.serving.exposures == "gs://shop/exposures"


def test_pictures_need_a_local_catalogue(tmp_path):
    raw = {"catalogue": {"path": "s3://shop/catalogue.parquet"}, "events": {"avro": ["e/*.avro"]}}
    with pytest.raises(config.ConfigError, match=r"catalogue\.path must be local, not s3://shop/catalogue\.parquet"):
        config.parse({**raw, "visual": {"enabled": True}}, base=tmp_path)


def test_the_server_refuses_a_remote_exposures_folder(tmp_path):
    """It writes exposures itself, to a local folder; a build reads them from wherever they are shipped."""
    path = config_file(tmp_path, "s3://shop", "parquet")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == EXIT_BAD_INPUT
    assert "serving.exposures is s3://shop/exposures: the server writes exposures to a local folder" in result.stderr
