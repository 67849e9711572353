"""The ``etalage`` command line.

Exit codes (documented in the README and docs/cli.md for cron and Airflow):

* 0: success;
* 1: an unexpected error (a bug: please report it with the traceback);
* 2: wrong command-line usage;
* 3: bad input: the config, an event file or the catalogue; the message names it;
* 4: another build (or rollback) holds the lock;
* 5: the existing warehouse cannot be opened;
* 6: the evaluation gate refused the build: nothing was published;
* 7: a snapshot failed verification (a missing or changed file): nothing was switched;
* 8: the disk is full (or a quota is exhausted): the message names the path; nothing was changed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

import click
import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from click.decorators import FC
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from engine import config as config_module
from engine import sqlfiles
from engine.example import generator
from engine.ingest import files, locations
from engine.pipeline import visual_stage
from engine.publish import durable, gate, locks, snapshot, warehouse

if TYPE_CHECKING:
    from engine import build as build_module

EXIT_BAD_INPUT = 3
EXIT_BUSY = 4
EXIT_UNREADABLE_WAREHOUSE = 5
EXIT_GATE_REFUSED = 6
EXIT_SNAPSHOT_INVALID = 7
EXIT_DISK_FULL = 8

err = Console(stderr=True, soft_wrap=True)


class BadInput(click.ClickException):
    """A user error that the message explains: a bad query, a missing file."""

    exit_code = EXIT_BAD_INPUT


out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160, soft_wrap=True)
"""Standard output: as wide as the terminal (or ``COLUMNS``); 160 columns into a pipe or a file."""


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=Path("etalage.toml"),
    show_default=True,
    help="The shop's configuration: events, catalogue, warehouse, snapshots (see docs/configuration.md).",
)
"""The ``--config`` option every command that reads a shop takes."""


class ConsoleReporter:
    """Shows a progress bar while files are checked, and one line per finished build step."""

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        info: dict = {}
        begin = time.perf_counter()
        with err.status(f"{name} ..."):
            yield info
        rows = f"{info['rows']:>12,} rows" if "rows" in info else " " * 17
        err.print(f"  [green]✓[/] {name:<28}{rows}  {time.perf_counter() - begin:6.2f} s")

    @contextmanager
    def files(self, total: int) -> Iterator:
        with _progress() as progress:
            task = progress.add_task("checking event files", total=total)
            yield lambda path: progress.advance(task)

    @contextmanager
    def bar(self, description: str) -> Iterator:
        if not err.is_terminal:  # a log file shows no bar: a line every few seconds instead
            yield LogLines(description)
            return
        with _progress() as progress:
            task = progress.add_task(description, total=None)
            yield lambda done, total, description=None: progress.update(
                task, completed=done, total=total, **({"description": description} if description else {})
            )


class LogLines:
    """Progress for a log file: ``description: done/total, rate/s, seconds`` every ``every`` seconds and at each end.

    A first build encodes pictures for minutes; under cron, or with output
    sent to a file, a bar prints nothing at all for those minutes.
    """

    def __init__(self, description: str, every: float = 5.0) -> None:
        self.description, self.every = description, every
        self.begin = self.last = time.perf_counter()

    def __call__(self, done: int, total: int, description: str | None = None) -> None:
        now = time.perf_counter()
        if description and description != self.description:  # the next phase, on a clock of its own
            self.description, self.begin, self.last = description, now, now
        if done < total and now - self.last < self.every:
            return
        self.last, seconds = now, now - self.begin
        rate = done / seconds if seconds > 0 else 0.0
        err.print(f"  {self.description}: {done:,}/{total:,}, {rate:,.1f}/s, {seconds:.0f} s", highlight=False)


def _progress() -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """etalage: item-to-item recommendations from a shop's clickstream, in DuckDB."""


def shop_option(field: str, least: int | None, meaning: str) -> Callable[[FC], FC]:
    """``etalage generate``'s option for one :class:`generator.ShopSpec` field, whose default it shows."""
    return click.option(
        f"--{field}",
        type=int if least is None else click.IntRange(least),
        default=getattr(generator.ShopSpec, field),
        show_default=True,
        help=meaning,
    )


@main.command()
@click.option(
    "--out",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("example"),
    show_default=True,
    help="Folder to write the shop into (catalogue, events, etalage.toml).",
)
@shop_option("products", 10, "Products in the catalogue (each tenant sells a share of them).")
@shop_option("brands", 1, "Brands the products are spread over.")
@shop_option("events", 100, "About this many events (sessions are whole, so the count varies a little).")
@shop_option("days", 1, "Days of clickstream, one event file per day and format.")
@shop_option("seed", None, "Random seed: the same seed and options write the same shop.")
@click.option(
    "--format",
    "formats",
    type=click.Choice(["avro", "parquet"]),
    multiple=True,
    default=("avro", "parquet"),
    show_default=True,
    help="Event file formats to write (repeatable).",
)
@click.option(
    "--visual/--no-visual",
    default=False,
    show_default=True,
    help="Turn the visual stage on in the written etalage.toml (needs the `visual` extra to build).",
)
def generate(
    directory: Path,
    products: int,
    brands: int,
    events: int,
    days: int,
    seed: int,
    formats: tuple[str, ...],
    visual: bool,
) -> None:
    """Generate a synthetic fashion shop: catalogue, Divolte clickstream, product pictures and an etalage.toml."""
    spec = generator.ShopSpec(products=products, brands=brands, events=events, days=days, seed=seed)
    _generate(spec, directory, formats, visual)


def _generate(
    spec: generator.ShopSpec, directory: Path, formats: tuple[str, ...] = ("avro", "parquet"), visual: bool = False
) -> None:
    with err.status("generating the shop ..."):
        shop = generator.generate(spec)
    with _progress() as progress:
        task = progress.add_task(f"writing {', '.join(formats)} events", total=shop.events.num_rows * len(formats))
        generator.write_shop(shop, directory, formats, lambda done: progress.update(task, completed=done))
    config = directory / "etalage.toml"
    config.write_text(config_module.example_toml("avro" if "avro" in formats else "parquet", visual))
    err.print(
        f"wrote {shop.catalogue.num_rows:,} catalogue rows and {shop.events.num_rows:,} events "
        f"({', '.join(formats)}) to {directory}/; config: {config}"
    )
    err.print(f"product images in {directory}/images/: {shop.images.source}")


@main.command()
@config_option
@click.option(
    "--pairs",
    type=click.Choice(["kernel", "sql"]),
    default="kernel",
    show_default=True,
    help="Count pairs with the Numba kernel, or with the SQL self-join of sql/pair_counts.sql (DuckDB only).",
)
@click.option("--force", is_flag=True, help="Publish even if the evaluation gate would refuse the build.")
@click.option(
    "--full",
    is_flag=True,
    help="Ingest and count every event file again, forgetting what earlier builds stored "
    "(the way out when an ingested file changed or went away).",
)
@click.option(
    "--engine",
    type=click.Choice(["duckdb", "spark"]),
    default="duckdb",
    show_default=True,
    help="Run the pipeline in DuckDB, or on a Spark session (needs the `spark` extra and Java).",
)
@click.option(
    "--master",
    default=None,
    help="Spark master: local[*], yarn, spark://HOST:PORT (--engine spark; default local[*], or spark-submit's).",
)
@click.option(
    "--output",
    default=None,
    help="Folder (or Hadoop URI) for the Spark build's Parquet tables; default <warehouse>-spark/ beside the warehouse.",
)
@click.option(
    "--build-id",
    default=None,
    help="Name the Spark build (a scheduler's run id), so a sensor can wait for its _SUCCESS marker (--engine spark).",
)
@click.option(
    "--chart",
    is_flag=True,
    help="Also draw the evaluation into <warehouse>.evaluation.png (etalage evaluate --chart draws it any time).",
)
def build(
    config_path: Path,
    pairs: Literal["kernel", "sql"],
    force: bool,
    full: bool,
    engine: str,
    master: str | None,
    output: str | None,
    build_id: str | None,
    chart: bool,
) -> None:
    """Ingest new event files, update the counts, compute and evaluate every algorithm, and publish a snapshot.

    Only files no earlier build ingested are read, and only the sessions they
    (or a moved look-back window, or a changed catalogue) touch are counted
    again; --full, a first build or a config change that alters what counts
    starts from scratch. With --engine spark: the same pipeline on Spark, its
    tables written as Parquet under --output (no snapshot).
    """
    config = _load(config_path)
    if engine == "spark":
        if full:
            raise click.UsageError("--full goes with --engine duckdb (a Spark build always counts everything)")
        if chart:
            raise click.UsageError(
                "--chart goes with --engine duckdb (etalage evaluate --chart draws a published build)"
            )
        _build_spark(config, master, output, build_id)
        return
    if master or output or build_id:
        raise click.UsageError("--master, --output and --build-id go with --engine spark")
    _build(config, pairs, force, full, chart)


def _build(
    config: config_module.Config,
    pairs: Literal["kernel", "sql"] = "kernel",
    force: bool = False,
    full: bool = False,
    chart: bool = False,
) -> build_module.BuildResult:
    from engine import build as build_module  # Numba, only for builds

    err.print(f"building {config.warehouse}")
    begin = time.perf_counter()
    with _exits():
        result = build_module.build(config, pairs=pairs, force=force, full=full, reporter=ConsoleReporter())
    if result.counting == "incremental":
        err.print(f"counted incrementally: {sum(result.files.values()):,} new event files")
    else:
        err.print(f"counted everything again ({result.counting}): {result.counting_reason}")
    _summary(result, begin)
    err.print(f"serves {result.served_algorithm} ({result.served_reason})")
    assert result.gate and result.snapshot, "a build that returns has passed the gate and published"
    err.print(f"gate: {result.gate.verdict}: {result.gate.reason}")
    pruned = f"; pruned {', '.join(result.pruned)}" if result.pruned else ""
    err.print(f"published snapshot {result.snapshot.path} (now live){pruned}")
    if chart and config.evaluation.enabled:
        from engine.pipeline import chart as drawing  # matplotlib, only to draw

        err.print(f"evaluation chart: {drawing.write(config.warehouse)}")
    return result


def _build_spark(
    config: config_module.Config, master: str | None, output: str | None, build_id: str | None = None
) -> build_module.BuildResult:
    try:
        from engine.spark import runner
    except ImportError:
        raise click.UsageError("--engine spark needs pyspark: pip install 'etalage[spark]'") from None
    target = output or str(runner.default_output(config))
    begin = time.perf_counter()
    try:
        spark = runner.session(master)
    except runner.SparkUnavailable as error:
        raise click.UsageError(str(error)) from None
    err.print(f"building {target} on Spark ({spark.sparkContext.master})")
    if config.visual.enabled:
        err.print(
            "[yellow]the Spark engine does not run the visual stage[/]: no `visual` or `visual_blend` rows "
            "(a DuckDB build makes them; see docs/spark.md, What stays on one machine)"
        )
    with _exits():
        result = runner.build(config, target, spark=spark, reporter=ConsoleReporter(), build_id=build_id)
    _summary(result, begin)
    err.print(f"wrote {target} with its _SUCCESS marker; `etalage publish --from {target}` makes it live")
    return result


@main.command()
@config_option
@click.option("--from", "source", required=True, help="A Spark build's output folder (or Hadoop URI DuckDB can read).")
@click.option("--force", is_flag=True, help="Publish even if the evaluation gate would refuse the build.")
def publish(config_path: Path, source: str, force: bool) -> None:
    """Make a Spark build's tables the live snapshot, and the warehouse's tables views over them.

    Checks the build's _SUCCESS marker and the tables' columns, adds its
    builds and evaluation rows to the warehouse's history, gates its scores
    against the live snapshot, and stages, verifies and switches a snapshot
    as a DuckDB build does.
    """
    from engine.publish import spark_output  # Numba, through the kernels' schemas: only to publish

    config = _load(config_path)
    with _exits():
        result = spark_output.publish(config, source, force=force)
    err.print(f"took in build {result.build_id} from {source}: {result.rows['itemitem']:,} itemitem rows")
    assert result.served and result.gate and result.snapshot, "a publish that returns has passed the gate and published"
    err.print(f"serves {result.served.algorithm} ({result.served.reason})")
    err.print(f"gate: {result.gate.verdict}: {result.gate.reason}")
    pruned = f"; pruned {', '.join(result.pruned)}" if result.pruned else ""
    err.print(f"published snapshot {result.snapshot.path} (now live){pruned}")


def _summary(result: build_module.BuildResult, begin: float) -> None:
    if result.before_window:
        err.print(f"left unread {result.before_window:,} event files whose partitions lie before the look-back window")
    if not result.ingest:
        err.print("read no new events")
    for row in result.ingest:
        err.print(
            f"read {row['events_read']:,} {row['source_format']} events from {result.files[row['source_format']]:,} files; "
            f"dropped {row['dropped_duplicate']:,} duplicate and {row['dropped_corrupt']:,} corrupt; kept {row['events_kept']:,}"
        )
    if result.visual:
        looks = result.visual
        err.print(
            f"pictures: {looks.images:,} in the catalogue, {looks.cached:,} vectors from the embeddings cache, "
            f"{looks.encoded:,} encoded, {len(looks.skipped):,} unreadable and left out"
        )
        for message in looks.skipped[:5]:
            err.print(f"  left out: {message}", style="yellow", markup=False, highlight=False)
        if len(looks.skipped) > 5:
            err.print(f"  and {len(looks.skipped) - 5:,} more", style="yellow")
    err.print(
        f"wrote {result.rows['itemitem']:,} itemitem rows for {result.rows['item_counts']:,} products "
        f"in {time.perf_counter() - begin:.1f} s (build {result.build_id})"
    )


@main.command("transpile")
@click.argument("names", nargs=-1)
@click.option(
    "--dialect",
    type=click.Choice(["spark"]),
    default="spark",
    show_default=True,
    help="The SQL dialect to translate the pipeline's queries into.",
)
@click.option(
    "--output",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write one NAME.sql per file into this folder instead of printing them.",
)
def transpile_command(names: tuple[str, ...], dialect: str, directory: Path | None) -> None:
    """Print the pipeline's sql/ files (or just NAMES) in Spark SQL, translated by sqlglot from DuckDB's dialect.

    Table names stay the same; parameters become Spark's named markers
    (:min_support), to bind with spark.sql(query, args={...}). Files only a
    DuckDB build runs (the incremental counting, the store's views, snapshots)
    are left out.
    """
    from engine.spark import transpile

    known = [name for name in sqlfiles.names() if name not in transpile.DUCKDB_ONLY]
    unknown = sorted(set(names) - set(known))
    if unknown:
        why = transpile.DUCKDB_ONLY.get(unknown[0])
        reason = f"sql/{unknown[0]}.sql runs on DuckDB only ({why})" if why else f"no sql/{unknown[0]}.sql"
        raise click.BadParameter(f"{reason} (known: {', '.join(known)})", param_hint="NAMES")
    if directory:
        directory.mkdir(parents=True, exist_ok=True)
    for name in names or known:
        text = f"-- sql/{name}.sql, translated from DuckDB's dialect to {dialect} by sqlglot (etalage transpile)\n"
        text += transpile.spark_sql(name, pretty=True) + ";\n"
        if directory:
            (directory / f"{name}.sql").write_text(text)
        else:
            click.echo(text)
    if directory:
        err.print(f"wrote {len(names or known)} files to {directory}/")


@main.command()
@config_option
@click.option("--verify", "check", is_flag=True, help="Also verify every file of every snapshot against its manifest.")
def snapshots(config_path: Path, check: bool) -> None:
    """List the published snapshots, newest first, with their scores; `*` marks the live one.

    With --verify, every snapshot folder is checked, and any that fails (or a
    broken `current`) makes the exit code 7.
    """
    config = _load(config_path)
    root = config.snapshots.root
    current, problem = _live_or_problem(root)
    columns = ["live", "build_id", "created_at", "rows written", "served", gate.METRIC, "gate"]
    columns += ["verified"] if check else []
    listed = {each.path.name: each.manifest for each in snapshot.published(root)}
    names = [folder.name for folder in snapshot.folders(root)] if check else list(listed)
    invalid = []
    rows = []
    for name in reversed(names):
        manifest = listed.get(name, {})
        algorithm = snapshot.served_algorithm(manifest) if manifest else ""
        score = ((manifest.get("evaluation") or {}).get(algorithm) or {}).get(gate.METRIC)
        row: list[str | Text] = [
            "*" if current and name == current.path.name else "",
            name,
            manifest.get("created_at", "?"),
            f"{manifest.get('rows', {}).get('itemitem', 0):,}",
            algorithm,
            "" if score is None else f"{score:.4f}",
            (manifest.get("gate") or {}).get("verdict", ""),
        ]
        if check:
            try:
                snapshot.verify(root / name)
                row.append("ok")
            except snapshot.SnapshotInvalid as error:
                invalid.append(name)
                row.append(Text.assemble(("INVALID", "red"), f": {error}"))
        rows.append(dict(zip(columns, row, strict=True)))
    if not rows and not problem:
        raise BadInput(f"no snapshots under {root} yet; run `etalage build`")
    # Build ids are what `rollback ID` takes: printed whole, row by row where the table would not fit.
    out.print(_table(columns, rows, out.width))
    if problem:
        err.print(f"error: {problem}", style="red", markup=False, highlight=False)
    if check and (invalid or problem):
        failed = (
            f"{len(invalid)} of {len(names)} snapshots failed verification ({', '.join(invalid)})" if invalid else ""
        )
        err.print(f"error: {failed or 'the live pointer is broken'}", style="red", markup=False, highlight=False)
        sys.exit(EXIT_SNAPSHOT_INVALID)


def _live_or_problem(root: Path) -> tuple[snapshot.Snapshot | None, str | None]:
    """The live snapshot, or None and what is wrong with ``current`` (dangling, not a link, no manifest)."""
    try:
        return snapshot.live(root), None
    except snapshot.SnapshotInvalid as error:
        return None, str(error)


@main.command()
@click.argument("build_id", required=False)
@config_option
def rollback(build_id: str | None, config_path: Path) -> None:
    """Make an earlier snapshot live: BUILD_ID, or the newest one before the live one that verifies.

    The target is verified first. With `current` broken (dangling, not a
    link), the default is the newest snapshot that verifies. The warehouse is
    not changed, and the next build publishes (and gates against) from the
    rolled-back snapshot.
    """
    config = _load(config_path)
    with _exits(), snapshot.locked(config.snapshots.root):
        _, problem = _live_or_problem(config.snapshots.root)
        previous, now = snapshot.rollback(config.snapshots.root, build_id)
    was = f" (was {previous.path.name})" if previous else (f" ({problem})" if problem else "")
    err.print(f"live snapshot is now {now.path.name}{was}")


@main.command()
@click.argument("query")
@config_option
@click.option(
    "--warehouse",
    "warehouse_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Query this warehouse file instead of the config's.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="How to write the result: a table for reading, or a file format.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Write here instead of standard output (required for parquet).",
)
@click.option(
    "--max-rows", type=click.IntRange(1), default=1000, show_default=True, help="Rows shown by the table format."
)
def sql(
    query: str, config_path: Path, warehouse_path: Path | None, fmt: str, output: Path | None, max_rows: int
) -> None:
    """Run a read-only SQL query against the warehouse and print the result."""
    path = warehouse_path or _load(config_path).warehouse
    if not path.exists():
        raise BadInput(f"{path} does not exist; run `etalage build` first")
    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet needs --output FILE")
    try:
        with warehouse.connect_read_only(path) as connection:
            _check_read_query(connection, query)
            result = connection.execute(query).to_arrow_table()
    except duckdb.PermissionException as error:
        msg = (
            f"{error}\netalage sql reads the warehouse only: no other files, databases or extensions (--output exports)"
        )
        raise BadInput(msg) from None
    except duckdb.Error as error:
        raise BadInput(str(error)) from None
    with _exits():
        _write(result, fmt, output, max_rows)


READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})
"""What `etalage sql` runs: queries. DESCRIBE, SHOW and SUMMARIZE are SELECTs to DuckDB."""


def _check_read_query(connection: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but a query before it runs, naming the statement (a locked connection would refuse most anyway)."""
    for statement in connection.extract_statements(query):
        if statement.type not in READ_STATEMENTS:
            kind = statement.type.name
            msg = (
                f"etalage sql runs read-only queries (SELECT, EXPLAIN), not {kind}: the warehouse is opened "
                "read-only, without access to other files or settings; --output FILE exports a result"
            )
            raise BadInput(msg)


def _write(result: pa.Table, fmt: str, output: Path | None, max_rows: int) -> None:
    """Print ``result``, or write it to ``output`` whole: into a dot-file renamed over it, removed if writing fails."""
    if output is None:
        _print(result, fmt, sys.stdout.buffer, max_rows)
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        with durable.writing(output), partial.open("wb") as sink:
            _print(result, fmt, sink, max_rows)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _print(result: pa.Table, fmt: str, sink: BinaryIO, max_rows: int) -> None:
    sys.stdout.flush()  # what the console printed before comes first
    if fmt == "parquet":
        pq.write_table(result, sink)
    elif fmt == "csv":
        pacsv.write_csv(result, sink)
    elif fmt == "json":
        sink.write(json.dumps(result.to_pylist(), default=str, indent=1).encode() + b"\n")
    else:
        rows = result.slice(0, max_rows).to_pylist()
        if sink is sys.stdout.buffer:
            out.print(_table(result.column_names, rows, out.width))
        else:
            text = io.TextIOWrapper(sink, encoding="utf-8", write_through=True)
            Console(file=text, width=200).print(_table(result.column_names, rows, 200))
            text.detach()  # the sink stays open for the caller
        if result.num_rows > max_rows:
            err.print(f"showing {max_rows:,} of {result.num_rows:,} rows (--max-rows)")
    sink.flush()


def _table(names: list[str], rows: list[dict], width: int) -> Table:
    """A table of the rows; where it would not fit ``width`` unwrapped, one ``name  value`` block per row instead."""
    table = Table(*names)
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    if Console(width=1 << 16).measure(table).maximum <= width:
        return table
    records = Table.grid(padding=(0, 2))
    records.add_column(justify="right", style="bold", no_wrap=True)
    records.add_column(overflow="fold")
    for number, row in enumerate(rows, 1):
        records.add_row(Text(f"row {number}", style="dim"), "")
        for name, value in row.items():
            records.add_row(name, _cell(value))
    return records


def _cell(value: object) -> Text:
    """A value as text (never read as markup: a ``[`` in the data stays as it is); styled text stays as it is."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, Text):
        return value
    return Text(f"{value:.6g}" if isinstance(value, float) else str(value))


@main.command()
@config_option
@click.option("--show", is_flag=True, help="Only print the scores recorded so far; compute nothing.")
@click.option("--all", "every_build", is_flag=True, help="Print every evaluation, not just the latest.")
@click.option(
    "--chart",
    "chart_target",
    type=click.Path(path_type=Path),
    default=None,
    help="Also draw the scores and MRR@20 across builds into this PNG.",
)
def evaluate(config_path: Path, show: bool, every_build: bool, chart_target: Path | None) -> None:
    """Score the warehouse's algorithms on the evaluation split, record them in `evaluation`, and print them.

    `etalage build` does the same after every build; this re-scores the
    current warehouse, for instance after changing [evaluation] in the config.
    """
    config = _load(config_path)
    if not config.warehouse.exists():
        raise BadInput(f"{config.warehouse} does not exist; run `etalage build` first")
    if not show:
        from engine.pipeline import evaluation

        with _exits(), err.status("evaluating ..."):
            evaluation.rescore(config)
    _write(_evaluation(config.warehouse, every_build), "table", None, 10_000)
    if chart_target:
        from engine.pipeline import chart

        err.print(f"wrote {chart.write(config.warehouse, chart_target)}")


def _evaluation(path: Path, every_build: bool = False) -> pa.Table:
    with warehouse.connect(path, read_only=True) as connection:
        if not sqlfiles.scalar(
            connection.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'evaluation'")
        ):
            raise BadInput(f"{path} has no evaluation yet: set [evaluation] test_days (or cutoff) and build")
        present = {row[0] for row in connection.execute("DESCRIBE evaluation").fetchall()}
        # A warehouse last built by an older etalage has no intervals yet: its next build adds the columns.
        # The columns fit 160 characters (a console that is not a terminal): the build only when there are several.
        differences = (
            ", round(popularity_bias, 2) AS pop_bias, compared_with AS vs, round(mrr_at_20_diff, 4) AS diff,"
            " '[' || round(mrr_at_20_diff_low, 4) || ', ' || round(mrr_at_20_diff_high, 4) || ']' AS diff_95"
            if "mrr_at_20_diff_low" in present
            else ""
        )
        build = "build_id, " if every_build else ""
        return connection.execute(
            f"""
            SELECT {build}algorithm, sessions, round(mrr, 4) AS mrr, round(mrr_at_20, 4) AS mrr_at_20,
                   round(hit_rate_at_20, 4) AS hit_rate_at_20, round(coverage, 3) AS coverage{differences}
            FROM evaluation
            WHERE $every OR evaluated_at = (SELECT max(evaluated_at) FROM evaluation)
            ORDER BY evaluated_at NULLS FIRST, build_id, algorithm
            """,
            {"every": every_build},
        ).to_arrow_table()


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 0 for v in values):
        raise click.BadParameter(f"{text!r} has a negative value")
    return values


def grid_option(key: str, meaning: str) -> Callable[[FC], FC]:
    """``etalage tune``'s option for one ``algorithms`` key: the values to try, comma-separated."""
    return click.option(
        f"--{key.replace('_', '-')}",
        default=",".join(map(str, config_module.TUNING_GRID[key])),
        show_default=True,
        help=f"Values of algorithms.{key} to try, comma-separated ({meaning}).",
    )


@main.command()
@config_option
@grid_option("min_support", "fewest sessions a pair must share")
@grid_option("max_session_items", "sessions with more distinct products are dropped as bots; 0: no cap")
@grid_option("top_n", "recommendations kept per product")
@grid_option("look_back_days", "days of events before the newest that count; 0: all")
@grid_option("sr_window", "steps the sequential rules look ahead")
def tune(
    config_path: Path, min_support: str, max_session_items: str, top_n: str, look_back_days: str, sr_window: str
) -> None:
    """Try a grid of algorithm parameters on the evaluation split; record every trial in `tuning`."""
    config = _load(config_path)
    grid = {
        "min_support": _ints(min_support),
        "max_session_items": _ints(max_session_items),
        "top_n": _ints(top_n),
        "look_back_days": _ints(look_back_days),
        "sr_window": _ints(sr_window),
    }
    if min(grid["min_support"] + grid["top_n"]) < 1:
        raise click.BadParameter("min_support and top_n must be >= 1")
    if not all(1 <= w <= config_module.MAX_SR_WINDOW for w in grid["sr_window"]):
        raise click.BadParameter(f"sr_window must be from 1 to {config_module.MAX_SR_WINDOW}")
    from engine.pipeline import tune as tune_module

    total = len(tune_module.trials(config.algorithms, grid))
    with _exits(), _progress() as progress:
        task = progress.add_task("trials", total=total)
        tune_id, rows, lead = tune_module.tune(config, grid, lambda done, trial: progress.update(task, completed=done))
    best = rows.slice(0, 1).to_pylist()[0]
    _write(rows.slice(0, 10), "table", None, 10)
    out.print(
        f"best by MRR@20: {best['algorithm']} with min_support={best['min_support']}, "
        f"max_session_items={best['max_session_items']}, top_n={best['top_n']}, look_back_days={best['look_back_days']}, "
        f"sr_window={best['sr_window']} "
        f"(MRR@20 {best['mrr_at_20']:.4f}); all {total} trials are in the tuning table (tune_id {tune_id})"
    )
    if lead:
        out.print(lead.describe())


@main.command()
@click.option(
    "--out",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("example"),
    show_default=True,
    help="The example shop's folder: generated there unless it already holds an etalage.toml.",
)
@click.option(
    "--serve/--no-serve",
    "then_serve",
    default=True,
    show_default=True,
    help="Serve the published snapshot afterwards (until Ctrl-C).",
)
def demo(directory: Path, then_serve: bool) -> None:
    """Generate the example shop (unless it is there), build it, show some recommendations, and serve them."""
    config_path = directory / "etalage.toml"
    if then_serve:  # before minutes of building: the port may be taken by the last demo, still running
        serving = _load(config_path).serving if config_path.exists() else config_module.Serving()
        _check_port(serving.host, serving.port, config_path)
    if not config_path.exists():
        _generate(generator.ShopSpec(), directory, visual=True)
    config = _load(config_path)
    _build(config, chart=True)
    with warehouse.connect(config.warehouse, read_only=True) as connection:
        product = connection.execute(
            "SELECT tenant, product_id, sessions FROM item_counts ORDER BY sessions DESC, product_id LIMIT 1"
        ).fetchone()
        assert product is not None, "the example shop's build counts products"
        out.print(f"\nTop 5 per algorithm for product {product[1]} on tenant {product[0]} ({product[2]} sessions):")
        result = connection.execute(
            """
            SELECT i.algorithm, i.rank, i.related_product_id, p.title, i.distance_score, i.cooccurrence
            FROM itemitem AS i
            JOIN products AS p ON p.tenant = i.tenant AND p.product_id = i.related_product_id
            WHERE i.tenant = $tenant AND i.product_id = $product AND i.rank <= 5
            ORDER BY i.algorithm, i.rank
            """,
            {"tenant": product[0], "product": product[1]},
        ).to_arrow_table()
    _write(result, "table", None, 100)
    out.print("\nHow well each algorithm predicted the next product in the last week's sessions (etalage evaluate):")
    _write(_evaluation(config.warehouse), "table", None, 100)
    out.print(f'\nQuery it yourself: etalage sql --config {config_path} "SELECT * FROM itemitem LIMIT 10"')
    if then_serve:
        base = f"http://{config.serving.host}:{config.serving.port}"
        out.print(
            f"\nAsk the server (in another terminal):\n  curl '{base}/v1/{product[0]}/products/{product[1]}/recommendations?limit=5'"
            f"\n  curl '{base}/v1/{product[0]}/products/{product[1]}/gateway?visitor=0:demo-visitor'"
            f"\nor open the demo page in a browser: {base}/demo\n"
        )
        _serve(config)


@main.command()
@config_option
@click.option("--host", default=None, help="Listen here instead of serving.host.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Listen here instead of serving.port.")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Worker processes instead of serving.workers."
)
def serve(config_path: Path, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the live snapshot over HTTP: recommendations, the A/B gateway, /metrics and /schema.

    Runs the Litestar app under uvicorn with several worker processes; each
    picks up a newly published snapshot within serving.reload_seconds.
    """
    config = _load(config_path)
    _serve(config, host, port, workers)


def _serve(
    config: config_module.Config, host: str | None = None, port: int | None = None, workers: int | None = None
) -> None:
    import uvicorn  # the server's dependencies load only for `serve`

    if locations.is_remote(config.serving.exposures):
        err.print(
            f"error: serving.exposures is {config.serving.exposures}: the server writes exposures to a local folder "
            "(ship them to the store for builds; see docs/object-stores.md)",
            style="red",
            markup=False,
        )
        sys.exit(EXIT_BAD_INPUT)
    host, port = host or config.serving.host, config.serving.port if port is None else port
    _check_port(host, port, config.source)
    live, problem = _live_or_problem(config.snapshots.root)
    if problem:  # each worker falls back the same way (server.live)
        fallback = snapshot.newest_valid(config.snapshots.root)
        serving = (
            f"serving {fallback.path.name}, the newest snapshot that verifies"
            if fallback
            else "no snapshot verifies: /ready answers 503 until a build publishes one"
        )
        err.print(f"{problem}\n{serving}", style="yellow", markup=False, highlight=False)
    elif live is None:
        err.print(
            f"[yellow]no snapshot under {config.snapshots.root} yet[/]: /ready answers 503 until a build publishes one"
        )
    os.environ["ETALAGE_CONFIG"] = str(config.source.resolve()) if config.source else "etalage.toml"
    # Every worker counts into files here; /metrics adds them up (server/metrics.py).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="etalage-metrics-")
    err.print(
        f"serving {config.snapshots.root / snapshot.CURRENT} on http://{host}:{port}/ "
        f"(API docs: http://{host}:{port}/schema/swagger; Ctrl-C stops)"
    )
    try:
        uvicorn.run(
            "server.app:from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers or config.serving.workers,
            loop="uvloop",
            http="server.http:LimitedHttpTools",  # uvicorn's httptools with a header limit and JSON errors
            log_level="warning",
            access_log=False,
        )
    finally:
        shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)


def _check_port(host: str, port: int, config_path: Path | None) -> None:
    """Refuse to start when ``host:port`` cannot be listened on, with the ways out, before anything is done."""
    try:
        with socket.create_server((host, port)):  # SO_REUSEADDR, as uvicorn: a port in TIME_WAIT is free
            pass
    except OSError as error:
        where = f"serving.port in {config_path}" if config_path else "serving.port"
        raise BadInput(
            f"cannot listen on {host}:{port}: {error.strerror or error} (is another `etalage serve` or demo running? "
            f"stop it, or set {where}, or pass `etalage serve --port`)"
        ) from None


@main.command("example-warehouse")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("warehouse.duckdb.example"),
    show_default=True,
    help="Where to write the warehouse file (replaced if it exists).",
)
def example_warehouse(out: Path) -> None:
    """Rebuild the bundled example warehouse from a freshly generated example shop."""
    with tempfile.TemporaryDirectory(prefix="etalage-example-") as folder:
        _generate(generator.ShopSpec(), Path(folder), ("avro",))
        config = _load(Path(folder) / "etalage.toml")
        _build(config)
        warehouse.export(config.warehouse, out)
        with warehouse.connect(out) as connection:
            connection.execute("UPDATE builds SET config_path = NULL")
    err.print(f"wrote {out}")


def _load(path: Path) -> config_module.Config:
    with _exits():
        return config_module.load(path)


@contextmanager
def _exits() -> Iterator[None]:
    """Turn the errors users can act on into a one-line message and a documented exit code."""
    codes: dict[type[Exception], int] = {
        config_module.ConfigError: EXIT_BAD_INPUT,
        files.IngestError: EXIT_BAD_INPUT,
        locations.Unreachable: EXIT_BAD_INPUT,
        locks.Busy: EXIT_BUSY,
        warehouse.WarehouseUnreadable: EXIT_UNREADABLE_WAREHOUSE,
        gate.GateRefused: EXIT_GATE_REFUSED,
        snapshot.SnapshotInvalid: EXIT_SNAPSHOT_INVALID,
        visual_stage.VisualUnavailable: EXIT_BAD_INPUT,
        durable.DiskFull: EXIT_DISK_FULL,
    }
    if "engine.publish.spark_output" in sys.modules:  # imported only by the commands that can raise it
        codes[sys.modules["engine.publish.spark_output"].OutputRefused] = EXIT_BAD_INPUT
    try:
        try:
            yield
        except (OSError, duckdb.IOException) as error:
            full = durable.disk_full(error)
            if full is None:
                raise
            raise full from error
    except tuple(codes) as error:
        err.print(f"error: {error}", style="red", markup=False, highlight=False)
        sys.exit(next(code for kind, code in codes.items() if isinstance(error, kind)))
