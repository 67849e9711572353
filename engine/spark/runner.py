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
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Mapping

import pyarrow as pa
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
from engine.config import Config, ConfigError
from engine.ingest import catalogue, events, exposures, files
from engine.pipeline import state
from engine.publish import warehouse
from engine.spark import transpile

OUTPUT_TABLES = PUBLISHED_TABLES + ("evaluation", "builds")
"""The Parquet folders a Spark build writes under its output directory."""

STAGE = ("session_items", "item_counts", "tenant_sessions", "pair_counts", "ranked_pairs", "popular", "itemitem")
"""The item-item stage on Spark: the SQL path of :mod:`engine.pipeline.itemitem` (the Numba kernel is DuckDB's)."""

HOLDOUT = "holdout_"
"""Prefix of the evaluation stage's views (DuckDB puts them in schema ``holdout``)."""


class SparkUnavailable(RuntimeError):
    """Spark cannot start here: Java is missing or the JVM did not come up."""


def session(master: str | None = None) -> SparkSession:
    """The active Spark session, or a new one on ``master`` (``local[*]``, ``yarn``, ``spark://...``).

    Under ``spark-submit`` the session it configured is used as it is. A
    session etalage starts itself in local mode gets a 4 GiB driver and few
    shuffle partitions, which suit one machine. Every session computes in UTC,
    so timestamps mean what they mean in DuckDB.
    """
    active = SparkSession.getActiveSession()
    if active is None:
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            msg = "the Spark engine needs Java (17 or newer): install it or set JAVA_HOME"
            raise SparkUnavailable(msg)
        if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
            master = "local[*]"
        builder = SparkSession.builder.appName("etalage").config("spark.ui.showConsoleProgress", "false")
        if master:
            builder = builder.master(master)
        if master and master.startswith("local"):
            builder = builder.config("spark.driver.memory", "4g").config("spark.ui.enabled", "false")
            # Spark's own catalogue folder, which etalage never uses, instead of ./spark-warehouse.
            builder = builder.config(
                "spark.sql.warehouse.dir", os.path.join(tempfile.gettempdir(), "etalage-spark-warehouse")
            )
            builder = builder.config("spark.sql.shuffle.partitions", str(4 * _local_cores(master)))
        try:
            active = builder.getOrCreate()
        except Exception as error:  # pyspark reports a JVM that failed to start in several ways
            msg = f"Spark did not start ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            raise SparkUnavailable(msg) from None
        active.sparkContext.setLogLevel("ERROR")  # etalage reports its own steps; Spark's WARN lines are noise here
    active.conf.set("spark.sql.session.timeZone", "UTC")
    return active


def _local_cores(master: str) -> int:
    """The worker threads of a ``local``, ``local[N]`` or ``local[*]`` master."""
    inside = master[len("local[") : -1] if master.startswith("local[") else "1"
    return int(inside) if inside.isdigit() else (os.cpu_count() or 1)


def default_output(config: Config) -> Path:
    """Where a Spark build writes when ``--output`` is not given: ``<warehouse>-spark/`` beside the warehouse."""
    return config.warehouse.with_name(config.warehouse.stem + "-spark")


def build(
    config: Config, output: str | Path, *, spark: SparkSession | None = None, reporter: Reporter | None = None
) -> BuildResult:
    """Run the whole pipeline on Spark and replace the Parquet tables under ``output``."""
    reporter = reporter or Silent()
    spark = spark or session()
    result, found, started = checked_files(config, str(output), reporter)
    with ExitStack() as cleanup:
        run = _Run(spark, _Output(spark, str(output)), result, reporter)
        cleanup.callback(run.close)
        cleanup.push(run.output.discard_on_error)
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
        newest = run.sql("newest_event", {"until": None}).first()[0]
        parameters = {**config.algorithms.parameters(), "until": None, "newest": newest}
        for name in STAGE:
            run.view(name, parameters)
        if config.evaluation.enabled:
            _evaluate(run, config, result.build_id)
        result.ingest = [row.asDict() for row in spark.table("ingest_stats").orderBy("source_format").collect()]
        run.step("builds", lambda: _build_record(run, config, started, newest))
        run.output.publish()
    return result


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
        self.cached: list[str] = []

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
        cache: bool = False,
    ) -> None:
        """One step: ``sql/<name>.sql`` as the view ``view`` (default ``name``), written out if published."""
        view = view or name
        text = transpile.spark_sql(name, values or {}, tables=tables)

        def make() -> DataFrame:
            self.spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW {_identifier(view)} AS\n{text}")
            self.views.append(view)
            return self.spark.table(view)

        self.step(name, make, view=view, cache=cache)

    def step(self, name: str, make: Callable[[], DataFrame], *, view: str | None = None, cache: bool = False) -> None:
        """Make one table: written to the output (then read back) if published, else left a view, cached if asked."""
        view = view or name
        label = name if view == name else f"evaluation {name}"
        begin = time.perf_counter()
        with self.reporter.step(label) as info:
            frame = make()
            if name in OUTPUT_TABLES and view == name:
                frame = self.output.write(name, frame)
                self.result.rows[name] = info["rows"] = frame.count()
                frame.createOrReplaceTempView(view)  # a plain Parquet scan: no CTEs to mix up
                self.views.append(view)
            elif cache:
                self.spark.catalog.cacheTable(view)
                self.cached.append(view)
        self.result.seconds[label] = round(time.perf_counter() - begin, 3)

    def close(self) -> None:
        for view in self.cached:
            self.spark.catalog.uncacheTable(view)
        for view in dict.fromkeys(self.views):
            self.spark.catalog.dropTempView(view)


def _identifier(name: str) -> str:
    """A view name of etalage's own, quoted for Spark by sqlglot."""
    return exp.to_identifier(name).sql(dialect="spark")


class _Output:
    """The output directory, written beside the target and moved into place whole (Hadoop FileSystem renames)."""

    def __init__(self, spark: SparkSession, target: str) -> None:
        self.spark = spark
        jvm = spark.sparkContext._jvm
        self.target = jvm.org.apache.hadoop.fs.Path(target)
        self.building = jvm.org.apache.hadoop.fs.Path(target + ".building")
        self.previous = jvm.org.apache.hadoop.fs.Path(target + ".previous")
        self.fs = self.target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        marker = jvm.org.apache.hadoop.fs.Path(target + "/builds")
        if self.fs.exists(self.target) and self.fs.listStatus(self.target) and not self.fs.exists(marker):
            # Publishing replaces the whole folder: never one that a Spark build did not write.
            msg = f"{target} exists and is not the output of an etalage Spark build (it has no builds/): choose another --output"
            raise ConfigError(msg)
        self.fs.delete(self.building, True)

    def write(self, table: str, frame: DataFrame) -> DataFrame:
        """Write ``frame`` as ``<output>.building/<table>/`` and return the rows read back from there."""
        path = self.building.toString() + "/" + table
        frame.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def discard_on_error(self, kind, error, traceback) -> None:
        """An ExitStack exit callback: a failed build leaves no ``.building`` folder behind."""
        if kind is not None:
            self.fs.delete(self.building, True)

    def publish(self) -> None:
        """Put the finished tables in place of the previous output."""
        self.fs.delete(self.previous, True)
        if self.fs.exists(self.target) and not self.fs.rename(self.target, self.previous):
            msg = f"cannot move {self.target} aside to {self.previous}"
            raise OSError(msg)
        if not self.fs.rename(self.building, self.target):
            msg = f"cannot move {self.building} to {self.target}"
            raise OSError(msg)
        self.fs.delete(self.previous, True)


def _map_events(spark: SparkSession, found: files.EventFiles, mapping: dict[str, str], cleanup: ExitStack) -> DataFrame:
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
    mapped.createOrReplaceTempView("mapped_events")
    cleanup.callback(spark.catalog.dropTempView, "mapped_events")
    return spark.sql(transpile.spark_sql("events", {}))


def _source(spark: SparkSession, fmt: str, paths: list[str], cleanup: ExitStack) -> DataFrame:
    """The raw records of the files; Avro through spark-avro when present, else staged as Parquet by DuckDB."""
    if fmt == "parquet":
        return spark.read.parquet(*paths)
    try:
        return spark.read.format("avro").load(paths)
    except AnalysisException as error:
        if "avro" not in str(error).lower():
            raise
    folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="etalage-avro-")))
    with warehouse.connect() as connection:
        connection.sql(f"FROM read_avro({sqlfiles.literal(paths)})").write_parquet(str(folder / "events.parquet"))
    return spark.read.parquet(str(folder / "events.parquet"))


def _catalogue(spark: SparkSession, path: Path) -> DataFrame:
    """``products``, loaded and checked on the driver exactly as a DuckDB build does (a catalogue is small)."""
    with warehouse.connect() as connection:
        catalogue.load_catalogue(connection, path)
        rows = connection.execute("SELECT * FROM products").to_arrow_table()
    return _from_driver(spark, rows)


def _exposures(spark: SparkSession, folder: Path) -> DataFrame:
    """``exposures``, the server's exposure files, loaded and checked on the driver as a DuckDB build does."""
    with warehouse.connect() as connection:
        exposures.load(connection, folder)
        rows = connection.execute("SELECT * FROM exposures").to_arrow_table()
    return _from_driver(spark, rows)


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
        newest = run.spark.table("events").agg(F.max("ts")).first()[0]
        split = newest - dt.timedelta(days=config.evaluation.test_days)
    newest = run.sql("newest_event", {"until": split}).first()[0]
    parameters = {**config.algorithms.parameters(), "until": split, "newest": newest}
    renamed = {name: HOLDOUT + name for name in STAGE}
    for name in STAGE:
        run.view(name, parameters, tables=renamed, view=HOLDOUT + name, cache=True)
    run.view("test_items", {**parameters, "cutoff": split}, view=HOLDOUT + "test_items", cache=True)
    scores = run.sql("evaluation", tables={"itemitem": HOLDOUT + "itemitem", "test_items": HOLDOUT + "test_items"})
    run.step(
        "evaluation",
        lambda: scores.select(
            F.lit(build_id).alias("build_id"),
            F.lit(split).cast("timestamp_ntz").alias("cutoff"),
            F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp_ntz").alias("evaluated_at"),
            F.lit(json.dumps(asdict(config.algorithms))).alias("parameters"),
            "*",
        ),
    )


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
