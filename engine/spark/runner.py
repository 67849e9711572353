"""``etalage build --engine spark``: the same pipeline on a Spark session, its tables written as Parquet.

For a clickstream that outgrows one machine. Every step is the same file in
``sql/`` as on DuckDB, translated by :mod:`engine.spark.transpile` and run with
``spark.sql``; the LLR is a SQL expression there, so executors need no
Python. Only the driver runs etalage: it finds and checks the event files
(:mod:`engine.ingest.events`, as a DuckDB build does), reads the catalogue, and
writes each published table, the build's ``evaluation`` rows and its
``builds`` row as a Parquet folder under the output directory.

The output is written beside the target (``<output>.building``) and moved
into place only when every table is written, so a failed build leaves the
previous output as it was. The tables are the warehouse's, with the same
columns and rows (``itemitem`` ordered by ``(tenant, algorithm, product_id,
rank)`` across its part files); the history tables hold this build only.

Avro: Spark reads Avro only through the external ``spark-avro`` package.
When it is on the classpath (``spark-submit --packages
org.apache.spark:spark-avro_2.13:<version>``), Spark reads the files itself;
otherwise the driver converts them to Parquet with DuckDB's Avro reader in a
local temporary folder, which executors can read only in local mode or when
that folder is on a filesystem they share.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from msgspec.structs import asdict
from pyspark.errors import AnalysisException, ParseException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from sqlglot import exp

from engine import sqlfiles
from engine.build import (
    PUBLISHED_TABLES,
    BuildResult,
    Reporter,
    Silent,
    checked_files,
    record_values,
)
from engine.config import Config, ConfigError, MappedColumn
from engine.ingest import catalogue, events, exposures, files, locations
from engine.pipeline import evaluation, state
from engine.publish import gate, locks, snapshot, spark_output, warehouse
from engine.spark import transpile

OUTPUT_TABLES = (*PUBLISHED_TABLES, "evaluation", "builds")
"""The Parquet folders a Spark build writes under its output directory."""

STAGE = (
    "session_items",
    "session_steps",
    "item_counts",
    "tenant_sessions",
    "pair_counts",
    "ranked_pairs",
    "ranked_steps",
    "popular",
    "itemitem",
)
"""The item-item stage on Spark: the SQL path of :mod:`engine.pipeline.itemitem` (the Numba kernel is DuckDB's)."""

HOLDOUT = "holdout_"
"""Prefix of the evaluation stage's views (DuckDB puts them in schema ``holdout``)."""


class SparkUnavailable(RuntimeError):
    """Spark cannot start here: Java is missing or the JVM did not come up."""


def session(master: str | None = None) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (``local[*]``, ``yarn``, ``spark://...``).

    Under ``spark-submit`` the session it configured is used as it is. A
    session etalage starts itself keeps Spark's own catalogue folder (which
    etalage never uses) in a temporary folder instead of ./spark-warehouse,
    and in local mode gets a 4 GiB driver. Shuffle partitions and adaptive
    execution are set for each build's data (:func:`_tune`). Every session
    computes in UTC, so timestamps mean what they mean in DuckDB.
    """
    active = SparkSession.getActiveSession()
    if active is None:
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            msg = "the Spark engine needs Java (17 or newer): install it or set JAVA_HOME"
            raise SparkUnavailable(msg)
        if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
            master = "local[*]"
        builder = SparkSession.builder.appName("etalage").config("spark.ui.showConsoleProgress", "false")
        builder = builder.config("spark.sql.warehouse.dir", tempfile.mkdtemp(prefix="etalage-spark-warehouse-"))
        if master:
            builder = builder.master(master)
        if master and master.startswith("local"):
            builder = builder.config("spark.driver.memory", "4g").config("spark.ui.enabled", "false")
        try:
            active = builder.getOrCreate()
        except Exception as error:  # noqa: BLE001 - pyspark reports a JVM that failed to start in several ways
            msg = f"Spark did not start ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            raise SparkUnavailable(msg) from None
        active.sparkContext.setLogLevel("ERROR")  # etalage reports its own steps; Spark's WARN lines are noise here
    active.conf.set("spark.sql.session.timeZone", "UTC")
    return active


def default_output(config: Config) -> Path:
    """Where a Spark build writes when ``--output`` is not given: ``<warehouse>-spark/`` beside the warehouse."""
    return config.warehouse.with_name(config.warehouse.stem + "-spark")


def build(
    config: Config,
    output: str | Path,
    *,
    spark: SparkSession | None = None,
    reporter: Reporter | None = None,
    build_id: str | None = None,
) -> BuildResult:
    """Run the whole pipeline on Spark and replace the Parquet tables under ``output``.

    ``build_id`` names the build (a scheduler passes its own, to wait for
    this build's ``_SUCCESS`` marker); by default one is made as a DuckDB
    build makes it.

    Raises:
        ConfigError: Avro events on a cluster without spark-avro, or an output folder another build is writing.
    """
    reporter = reporter or Silent()
    spark = spark or session()
    result, found, started = checked_files(config, str(output), reporter)
    result.build_id = build_id or result.build_id
    if found.avro and not _reads_avro(spark) and not (spark.sparkContext.master or "").startswith("local"):
        msg = (
            f"events.avro on a cluster ({spark.sparkContext.master}) needs Spark's Avro reader: "
            f"spark-submit --packages org.apache.spark:spark-avro_2.13:{spark.version} ... "
            "(or list the events under events.parquet); without it only local mode can stage Avro on the driver"
        )
        raise ConfigError(msg)
    _tune(spark, sum(found.listing[path].size for paths in found.by_format().values() for path in paths))
    with ExitStack() as cleanup:
        run = _Run(spark, cleanup.enter_context(_Output(spark, str(output))), result, reporter)
        cleanup.callback(run.close)
        run.step("events", lambda: _map_events(spark, found, config.events.mapping, cleanup))
        run.view("file_counts")
        # sql/ingest_stats.sql sums the ledger of ingested files; on Spark every file is read now.
        spark.table("file_counts").withColumnRenamed("source_format", "format").createOrReplaceTempView(
            "ingested_files"
        )
        run.views.append("ingested_files")
        run.view("ingest_stats")
        run.step("products", lambda: _catalogue(spark, config.catalogue))
        run.step("exposures", lambda: _exposures(spark, config.serving.exposures))
        run.view("click_through")
        newest = _value(run.sql("newest_event", {"until": None}))
        parameters = {**config.algorithms.parameters(), "until": None, "newest": newest}
        for name in STAGE:
            run.view(name, parameters)
        if config.evaluation.enabled:
            _evaluate(run, config, result.build_id)
        scored = spark.table("evaluation").collect() if config.evaluation.enabled else []
        scores = {row["algorithm"]: row.asDict() for row in scored}
        chosen = gate.served_for(scores, config, snapshot.live(config.snapshots.root))
        result.served_algorithm, result.served_reason = chosen.algorithm, chosen.reason
        result.ingest = [row.asDict() for row in spark.table("ingest_stats").orderBy("source_format").collect()]
        run.step("builds", lambda: _build_record(run, config, started, newest))
        run.output.publish(result.build_id)
    return result


def _value(frame: DataFrame) -> Any:
    """The first column of a one-row result (an aggregate's), None when it has no row."""
    row = frame.first()
    return row[0] if row is not None else None


def _jvm(spark: SparkSession) -> Any:
    """The session's JVM gateway, through which the build reaches Hadoop's file system and Spark's data sources."""
    jvm = spark.sparkContext._jvm
    if jvm is None:
        msg = "this Spark session has no JVM gateway (stopped, or not a classic session): a build needs a running one"
        raise ConfigError(msg)
    return jvm


def _reads_avro(spark: SparkSession) -> bool:
    """Whether Spark finds its Avro data source (``--packages org.apache.spark:spark-avro_2.13:<version>``)."""
    sources = _jvm(spark).org.apache.spark.sql.execution.datasources.DataSource
    try:
        sources.lookupDataSource("avro", spark._jsparkSession.sessionState().conf())
    except Exception:  # noqa: BLE001 - py4j raises Spark's AnalysisException: "Failed to find data source: avro"
        return False
    return True


def _tune(spark: SparkSession, input_bytes: int) -> None:
    """Settings for the data at hand: shuffle partitions from its size, adaptive execution and skew joins on.

    About 128 MB of input per shuffle partition, and at least two per core;
    adaptive execution coalesces the ones that turn out small and splits
    skewed joins (a few very popular products).
    """
    cores = spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(max(2 * cores, input_bytes // (128 << 20))))
    spark.conf.set("spark.sql.adaptive.enabled", "true")
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "true")
    spark.conf.set("spark.sql.adaptive.skewJoin.enabled", "true")


class _Run:
    """One build's steps: ``sql/`` files as Spark views, the published ones written out; each timed and reported.

    A step's SQL becomes a view with ``CREATE TEMPORARY VIEW``, never a
    DataFrame registered as a view: Spark 4.1 mixes up the CTEs of two
    DataFrame-backed views read by one query (``itemitem.sql`` reads
    ``ranked_pairs`` and ``popular``), which gave wrong ``popular`` rows once
    they were cached, and ``key not found`` or a stack overflow otherwise.
    """

    def __init__(self, spark: SparkSession, output: _Output, result: BuildResult, reporter: Reporter) -> None:
        self.spark, self.output, self.result, self.reporter = spark, output, result, reporter
        self.views: list[str] = []

    def sql(self, name: str, values: Mapping | None = None, tables: Mapping[str, str] | None = None) -> DataFrame:
        """The rows of ``sql/<name>.sql`` on Spark, its parameters bound and its tables renamed."""
        return self.spark.sql(transpile.spark_sql(name, values or {}, tables=tables))

    def view(
        self,
        name: str,
        values: Mapping | None = None,
        *,
        tables: Mapping[str, str] | None = None,
        view: str | None = None,
        keep: bool = False,
    ) -> None:
        """One step: ``sql/<name>.sql`` as the view ``view`` (default ``name``), written out if published."""
        view = view or name
        text = transpile.spark_sql(name, values or {}, tables=tables)

        def make() -> DataFrame:
            self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {_identifier(view)} AS\n{text}")
            self.views.append(view)
            return self.spark.table(view)

        self.step(name, make, view=view, keep=keep)

    @contextmanager
    def timed(self, label: str) -> Iterator[dict[str, Any]]:
        """One reported step, its seconds kept in the build's result; yields the step's info (``rows``)."""
        begin = time.perf_counter()
        with self.reporter.step(label) as info:
            yield info
        self.result.seconds[label] = round(time.perf_counter() - begin, 3)

    def step(self, name: str, make: Callable[[], DataFrame], *, view: str | None = None, keep: bool = False) -> None:
        """Make one table: written to the output (then read back) if published, else a view, computed now if ``keep``."""
        view = view or name
        label = name if view == name else f"evaluation {name}"
        with self.timed(label) as info:
            frame = make()
            if name in OUTPUT_TABLES and view == name:
                frame = self.output.write(name, frame)
                self.result.rows[name] = info["rows"] = frame.count()
                frame.createOrReplaceTempView(view)  # a plain Parquet scan: no CTEs to mix up
                self.views.append(view)
            elif keep:
                # Computed now and kept (memory, then disk) as the view's rows. Not cacheTable: Spark reuses a cache
                # only for a query whose plan matches it, and the stage's plans never matched, so every later query
                # computed the whole stage again from the events.
                frame = frame.localCheckpoint(eager=True)
                info["rows"] = frame.count()
                frame.createOrReplaceTempView(view)

    def collected(self, label: str, frame: DataFrame) -> pa.Table:
        """``frame`` computed and brought to the driver as one timed, reported step: what it computes shows as it runs."""
        with self.timed(label) as info:
            rows = frame.toArrow()
            info["rows"] = rows.num_rows
        return rows

    def close(self) -> None:
        for view in dict.fromkeys(self.views):
            self.spark.catalog.dropTempView(view)


def _identifier(name: str) -> str:
    """A view name of etalage's own, quoted for Spark by sqlglot."""
    return exp.to_identifier(name).sql(dialect="spark")


class _Output:
    """The output directory, written beside the target and moved into place whole (Hadoop FileSystem renames).

    A context manager: entering takes ``<output>.lock`` (created only if
    absent, which HDFS and local disks do atomically), so that two builds
    never write one output; leaving removes it, and a failed build's
    ``.building`` folder.
    """

    def __init__(self, spark: SparkSession, target: str) -> None:
        self.spark = spark
        jvm = _jvm(spark)
        self.path = jvm.org.apache.hadoop.fs.Path
        self.target = self.path(target)
        self.building = self.path(target + ".building")
        self.previous = self.path(target + ".previous")
        self.lock = self.path(target + ".lock")
        self.fs = self.target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        marker = self.path(target + "/builds")
        if self.fs.exists(self.target) and self.fs.listStatus(self.target) and not self.fs.exists(marker):
            # Publishing replaces the whole folder: never one that a Spark build did not write.
            msg = f"{target} exists and is not the output of an etalage Spark build (it has no builds/): choose another --output"
            raise ConfigError(msg)

    def __enter__(self) -> _Output:
        if not self.fs.createNewFile(self.lock):
            msg = (
                f"another Spark build is writing {self.target.toString()} (lock {self.lock.toString()} is held; "
                "remove it if no build runs)"
            )
            raise locks.Busy(msg)
        self.fs.delete(self.building, True)
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.fs.delete(self.building, True)
        self.fs.delete(self.lock, False)

    def write(self, table: str, frame: DataFrame) -> DataFrame:
        """Write ``frame`` as ``<output>.building/<table>/`` and return the rows read back from there."""
        path = self.building.toString() + "/" + table
        frame.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def publish(self, build_id: str) -> None:
        """Put the finished tables, and last the ``_SUCCESS`` marker naming the build, in place of the previous output."""
        self.fs.setWriteChecksum(False)  # no ._SUCCESS.crc beside the marker on a local disk
        marker = self.fs.create(self.path(self.building.toString() + "/" + spark_output.SUCCESS), True)
        marker.write(bytearray(json.dumps({"build_id": build_id, "tables": list(OUTPUT_TABLES)}).encode()))
        marker.close()
        self.fs.delete(self.previous, True)
        if self.fs.exists(self.target) and not self.fs.rename(self.target, self.previous):
            msg = f"cannot move {self.target} aside to {self.previous}"
            raise OSError(msg)
        if not self.fs.rename(self.building, self.target):
            msg = f"cannot move {self.building} to {self.target}"
            raise OSError(msg)
        self.fs.delete(self.previous, True)


def _map_events(
    spark: SparkSession, found: files.EventFiles, mapping: dict[MappedColumn, str], cleanup: ExitStack
) -> DataFrame:
    """``mapped_events`` (the view ``sql/events.sql`` and ``sql/file_counts.sql`` read), then ``events``."""
    mapped = None
    for fmt, paths in found.by_format().items():
        source = _source(spark, fmt, list(paths), cleanup)
        columns = [F.lit(fmt).alias("source_format"), F.input_file_name().alias("filename")]
        for key, sql_type in events.MAPPED_COLUMNS.items():
            column = transpile.column(mapping[key], sql_type, key)
            try:
                source.limit(0).selectExpr(column)
            except (AnalysisException, ParseException) as error:
                msg = f"events.mapping.{key} fails on the {fmt} files: {mapping[key]!r}: {str(error).splitlines()[0]}"
                raise ConfigError(msg) from None
            columns.append(F.expr(column))
        relation = source.select(*columns)
        mapped = relation if mapped is None else mapped.unionByName(relation)
    assert mapped is not None, "a Spark build maps at least one file"  # checked_files refuses none
    mapped.createOrReplaceTempView("mapped_events")
    cleanup.callback(spark.catalog.dropTempView, "mapped_events")
    return spark.sql(transpile.spark_sql("events", {}))


def _source(spark: SparkSession, fmt: str, paths: list[str], cleanup: ExitStack) -> DataFrame:
    """The raw records of the files; Avro through spark-avro when present, else staged as Parquet by DuckDB."""
    if fmt == "parquet":
        return _read(spark, paths, lambda uris: spark.read.parquet(*uris))
    try:
        return _read(spark, paths, lambda uris: spark.read.format("avro").load(uris))
    except AnalysisException as error:
        if "avro" not in str(error).lower():
            raise
    folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="etalage-avro-")))
    with warehouse.connect() as connection, locations.duckdb_reads(connection, paths):
        connection.sql(f"FROM read_avro({sqlfiles.literal(paths)})").write_parquet(str(folder / "events.parquet"))
    return spark.read.parquet(str(folder / "events.parquet"))


def _catalogue(spark: SparkSession, path: locations.Location) -> DataFrame:
    """``products``, loaded and checked on the driver exactly as a DuckDB build does (a catalogue is small)."""
    with warehouse.connect() as connection:
        catalogue.load_catalogue(connection, path)
        rows = connection.execute("SELECT * FROM products").to_arrow_table()
    return _from_driver(spark, rows)


def _exposures(spark: SparkSession, folder: locations.Location) -> DataFrame:
    """``exposures``, the server's exposure files, read by Spark (they grow with traffic).

    A file of another schema is refused with its name, as a DuckDB build does.
    """
    schema = from_arrow_schema(exposures.SCHEMA, prefer_timestamp_ntz=True)
    paths = exposures.checked(folder)  # footers only, on the driver; the rows stay with Spark
    if not paths:
        return spark.createDataFrame([], schema=schema)
    return _read(spark, paths, lambda uris: spark.read.schema(schema).parquet(*uris)).orderBy("ts", "exposure_id")


_NO_FILESYSTEM = ("No FileSystem for scheme", "ClassNotFoundException: Class org.apache.hadoop.fs.s3a.")
"""How Hadoop says it cannot reach a scheme: none configured (gs://), or hadoop-aws's classes missing (s3a://)."""


def _read(spark: SparkSession, paths: list[str], reader: Callable[[list[str]], DataFrame]) -> DataFrame:
    """``reader`` over the files as Hadoop names them (``s3://`` is ``s3a://``, hadoop-aws's scheme).

    Raises:
        ConfigError: Spark has no filesystem for a URI's scheme (hadoop-aws or the GCS connector is missing).
    """
    try:
        return reader([f"s3a://{path[5:]}" if locations.scheme(path) == "s3" else path for path in paths])
    except Exception as error:  # Py4J wraps Hadoop's: a scheme without a class, or a class not on the classpath
        if not any(sign in str(error) for sign in _NO_FILESYSTEM):
            raise
        found = next(path for path in paths if locations.is_remote(path))
        msg = (
            f"{found}: Spark has no filesystem for {locations.scheme(found)}:// "
            "(s3:// needs hadoop-aws: spark-submit --packages org.apache.hadoop:hadoop-aws:<Spark's Hadoop version>; "
            "gs:// needs the GCS connector; see docs/object-stores.md)"
        )
        raise ConfigError(msg) from None


def _from_driver(spark: SparkSession, rows: pa.Table) -> DataFrame:
    """Rows the driver read, as a DataFrame; timestamps stay wall-clock (TIMESTAMP_NTZ, DuckDB's TIMESTAMP).

    An empty table goes as an empty list: pyspark's Arrow path fails on a table without chunks.
    """
    schema = from_arrow_schema(rows.schema, prefer_timestamp_ntz=True)
    return spark.createDataFrame(rows if rows.num_rows else [], schema=schema)


def _evaluate(run: _Run, config: Config, build_id: str) -> None:
    """The evaluation of :mod:`engine.pipeline.evaluation`: the stage again on events before the cut-off, scored after it."""
    if config.evaluation.cutoff:
        split = config.evaluation.cutoff
    else:
        newest = _value(run.spark.table("events").agg(F.max("ts")))
        split = newest - dt.timedelta(days=config.evaluation.test_days)
    newest = _value(run.sql("newest_event", {"until": split}))
    parameters = {**config.algorithms.parameters(), "until": split, "newest": newest}
    renamed = {name: HOLDOUT + name for name in STAGE}
    for name in STAGE:
        run.view(name, parameters, tables=renamed, view=HOLDOUT + name, keep=True)
    # The test sessions through sql/session_items.sql, as engine.pipeline.evaluation.test_items reads them.
    run.view("test_events", {"cutoff": split}, view=HOLDOUT + "test_events")
    read = {**parameters, "until": None, "newest": None, "look_back_days": 0}
    run.view("session_items", read, tables={"events": HOLDOUT + "test_events"}, view=HOLDOUT + "test_session_items")
    tested = {"test_session_items": HOLDOUT + "test_session_items"}
    run.view("test_items", tables=tested, view=HOLDOUT + "test_items", keep=True)
    holdout = {name: HOLDOUT + name for name in ("itemitem", "test_items", "transition_ranks")}
    run.view("transition_ranks", tables=holdout, view=HOLDOUT + "transition_ranks", keep=True)
    # The bootstrap intervals are drawn on the driver, as a DuckDB build draws them, from one sum per test session.
    scores = run.collected("evaluation scores", run.sql("evaluation", tables=holdout))
    gains = run.collected("evaluation session_gains", run.sql("session_gains", tables=holdout))
    served = evaluation.served_by(scores, config.snapshots.gate_algorithm)
    if served in scores.column("algorithm").to_pylist():  # the session route's lists, scored alike
        visit = {"algorithm": served, "top_n": config.algorithms.top_n, "name": evaluation.VISIT}
        run.view("visit_lists", visit, tables=holdout, view=HOLDOUT + "visit_lists", keep=True)
        run.view(
            "visit_ranks",
            visit,
            tables={**holdout, "visit_lists": HOLDOUT + "visit_lists"},
            view=HOLDOUT + "visit_ranks",
        )
        visited = {**holdout, "itemitem": HOLDOUT + "visit_lists", "transition_ranks": HOLDOUT + "visit_ranks"}
        visit_scores = run.collected("evaluation visit scores", run.sql("evaluation", tables=visited))
        visit_gains = run.collected("evaluation visit session_gains", run.sql("session_gains", tables=visited))
        scores = pa.concat_tables([scores, visit_scores.cast(scores.schema)])
        gains = pa.concat_tables([gains, visit_gains.cast(gains.schema)])
    scored = evaluation.with_session_intervals(
        scores.sort_by("algorithm"), *_session_gains(gains), config.snapshots.gate_algorithm
    )
    run.step(
        "evaluation",
        lambda: _from_driver(run.spark, scored).select(
            F.lit(build_id).alias("build_id"),
            F.lit(split).cast("timestamp_ntz").alias("cutoff"),
            F.lit(dt.datetime.now(dt.UTC).replace(tzinfo=None)).cast("timestamp_ntz").alias("evaluated_at"),
            F.lit(json.dumps(asdict(config.algorithms))).alias("parameters"),
            "*",
        ),
    )


def _session_gains(rows: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``sql/session_gains.sql``'s rows as :func:`engine.pipeline.evaluation.with_session_intervals` takes them.

    Every algorithm has a row for every test session (``sql/transition_ranks.sql``
    crosses them), in the same order.
    """
    algorithm = rows.column("algorithm").to_numpy(zero_copy_only=False)
    gain = rows.column("gain").to_numpy()
    gains = {str(name): gain[algorithm == name] for name in dict.fromkeys(algorithm)}
    first = algorithm == algorithm[0] if algorithm.size else np.zeros(0, bool)
    return gains, rows.column("transitions").to_numpy()[first]


def _build_record(run: _Run, config: Config, started: dt.datetime, newest: dt.datetime | None) -> DataFrame:
    """The ``builds`` row of ``sql/build_record.sql``, with the values a DuckDB build binds (a Spark build counts all)."""
    values = {
        **record_values(config, run.result, started),
        "counting": "full",
        "counting_reason": "a Spark build counts everything",
        "newest_event": newest,
        "counted_with": json.dumps(state.counted_with(config)),
    }
    return run.sql("build_record", values)
