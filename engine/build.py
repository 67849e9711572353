"""``etalage build``: events in, the recommendation tables out, in a new warehouse file.

The steps, in order, each a file in ``sql/`` unless noted:

1. find and check the event files (``engine.ingest.events``), map them, keep the
   unflagged ones (``events``) and count the rest (``ingest_stats``); load the
   catalogue (``products``) and the server's exposure log (``exposures``,
   scored into ``click_through``);
2. ``session_items``, ``item_counts``, ``tenant_sessions``;
3. with ``[visual] enabled``, the visual stage (``engine.pipeline.visual_stage``):
   the catalogue's pictures through the encoder (new ones only, by the
   ``embeddings`` cache) into an Annoy index and the ``visual`` rows;
4. ``itemitem``: by the SQL path (``pair_counts``, ``ranked_pairs``,
   ``popular``, ``itemitem``; ``pairs="sql"``) or by the Numba kernel
   (default), which computes the same rows from ``item_index`` and
   ``baskets`` without materialising every pair; then the ``visual`` rows
   and their cold-start blend (``visual_blend``, ``itemitem_visual``);
5. unless ``[evaluation]`` turns it off, the same stage again on the events
   before the cut-off (schema ``holdout``, dropped afterwards), scored on the
   sessions after it (``test_items``, ``evaluation``) into ``evaluation``;
6. a row in ``builds``;
7. the evaluation gate (``engine.publish.gate``): a build that scores clearly worse
   than the live snapshot stops here, and nothing changes;
8. a snapshot (``engine.publish.snapshot``) staged and verified beside the live one;
   the warehouse file is replaced, then the snapshot is switched live and old
   snapshots are pruned. The visual index goes into the snapshot's
   ``visual/`` folder.

A build holds the snapshots root's lock from start to end, so two cron runs
never interleave; the second exits with "busy".
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Literal, Protocol

import duckdb

from engine import sqlfiles
from engine.config import Config
from engine.ingest import events, exposures
from engine.pipeline import evaluation, itemitem, visual_stage
from engine.publish import crashpoints, gate, snapshot, warehouse

PUBLISHED_TABLES = (
    "events",
    "ingest_stats",
    "products",
    "exposures",
    "click_through",
    "session_items",
    "item_counts",
    "tenant_sessions",
    "itemitem",
)
"""Tables a build leaves in the warehouse for analysts (plus the history table ``builds``)."""


class Reporter(Protocol):
    """Where a build tells what it is doing: the CLI prints it, tests ignore it."""

    def step(self, name: str) -> ContextManager[dict]:
        """Wraps one step; the step may put ``rows`` into the yielded dict."""

    def files(self, total: int) -> ContextManager[Callable[[str], None]]:
        """Wraps the file check; yields a function called once per file checked."""

    def bar(self, description: str) -> ContextManager[Callable[..., None]]:
        """Wraps a long step; yields a function called with (done, total) as it goes, and a new description when its phase changes."""


class Silent:
    """A :class:`Reporter` that says nothing."""

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        yield {}

    @contextmanager
    def files(self, total: int) -> Iterator:
        yield lambda path: None

    @contextmanager
    def bar(self, description: str) -> Iterator:
        yield lambda done, total, description=None: None


@dataclass
class BuildResult:
    """What one build read, dropped and wrote."""

    build_id: str
    warehouse: str
    files: dict[str, int]
    ingest: list[dict]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    gate: gate.Decision | None = None
    snapshot: snapshot.Snapshot | None = None
    pruned: list[str] = field(default_factory=list)
    visual: visual_stage.VisualOutput | None = None


def build(
    config: Config, *, pairs: Literal["kernel", "sql"] = "kernel", force: bool = False, reporter: Reporter | None = None
) -> BuildResult:
    """Run the whole pipeline for ``config``, replace its warehouse and publish a snapshot, atomically.

    Nothing live changes unless every step succeeds and the gate passes (or
    ``force``): on :class:`gate.GateRefused` the warehouse and the live
    snapshot are as they were.
    """
    with snapshot.locked(config.snapshots.root):
        snapshot.clean(config.snapshots.root)
        snapshot.recover(config.snapshots.root)  # a broken `current` would stop the build after all its work
        return _build(config, pairs, force, reporter or Silent())


def _build(config: Config, pairs: Literal["kernel", "sql"], force: bool, reporter: Reporter) -> BuildResult:
    result, files, started = checked_files(config, str(config.warehouse), reporter)
    parameters = {**config.algorithms.parameters(), "until": None, "min_sessions": config.visual.min_sessions}

    def timed(name: str, create) -> None:
        begin = time.perf_counter()
        with reporter.step(name) as info:
            create()
            if name in PUBLISHED_TABLES:
                result.rows[name] = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                info["rows"] = result.rows[name]
        result.seconds[name] = round(time.perf_counter() - begin, 3)

    def looks(folder: Path) -> None:
        with reporter.bar("encoding pictures") as progress:
            result.visual = visual_stage.compute(connection, config, folder, progress)

    with (
        warehouse.rebuild(config.warehouse) as connection,
        tempfile.TemporaryDirectory(
            prefix=f"{snapshot.STAGING_PREFIX}visual-",
            dir=config.snapshots.root,  # a killed build's is cleaned like staging
        ) as scratch,
    ):
        timed("events", lambda: events.load_events(connection, files, config.events.mapping))
        timed("products", lambda: events.load_catalogue(connection, config.catalogue))
        timed("exposures", lambda: exposures.load(connection, config.serving.exposures))
        timed("click_through", lambda: sqlfiles.create_table(connection, "click_through"))
        if config.visual.enabled:
            timed("visual", lambda: looks(Path(scratch) / visual_stage.INDEX_FOLDER))
        visual_rows = result.visual.rows if result.visual else None
        crashpoints.reach("compute")
        itemitem.stage(connection, pairs, parameters, timed, visual_rows)
        result.rows["itemitem"] = connection.execute("SELECT count(*) FROM itemitem").fetchone()[0]  # with the blend
        if config.evaluation.enabled:
            evaluation.evaluate(
                connection,
                config,
                pairs,
                result.build_id,
                lambda name, create: timed(f"evaluation {name}", create),
                visual_rows,
            )
        result.ingest = [
            dict(zip(("source_format", "events_read", "dropped_duplicate", "dropped_corrupt", "events_kept"), row))
            for row in connection.execute("SELECT * FROM ingest_stats").fetchall()
        ]
        _record(connection, config, result, started)
        scores = _scores(connection, result.build_id) if config.evaluation.enabled else None
        result.gate = gate.decide(
            scores,
            snapshot.live(config.snapshots.root),
            config.snapshots.gate_algorithm,
            config.snapshots.max_mrr_drop,
            force,
        )
        if not result.gate.publish:
            raise gate.GateRefused(result.gate)
        staged = {}
        timed("snapshot", lambda: staged.setdefault("snapshot", _stage(connection, config, result, scores)))
    result.snapshot = snapshot.publish(config.snapshots.root, staged["snapshot"])
    result.pruned = snapshot.prune(config.snapshots.root, config.snapshots.keep)
    return result


def checked_files(
    config: Config, target: str, reporter: Reporter
) -> tuple[BuildResult, events.EventFiles, dt.datetime]:
    """A build's first step on either engine: its id, and the event files found and checked (nothing read yet)."""
    started = dt.datetime.now(dt.timezone.utc)
    files = events.find(config.events)
    with reporter.files(len(files)) as advance:
        events.check(files, config.events.mapping, advance)
    result = BuildResult(
        build_id=f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        warehouse=target,
        files={fmt: len(paths) for fmt, paths in files.by_format().items()},
        ingest=[],
    )
    return result, files, started


def _scores(connection: duckdb.DuckDBPyConnection, build_id: str) -> dict[str, dict]:
    """This build's evaluation, per algorithm, as the manifest records it."""
    rows = (
        connection.execute(
            "SELECT * EXCLUDE (build_id, parameters) FROM evaluation WHERE build_id = $id", {"id": build_id}
        )
        .to_arrow_table()
        .to_pylist()
    )
    return {row.pop("algorithm"): row for row in rows}


def _stage(
    connection: duckdb.DuckDBPyConnection, config: Config, result: BuildResult, scores: dict | None
) -> snapshot.Snapshot:
    """Write this build's snapshot beside the live one (not yet live)."""
    manifest = {
        "parameters": {
            "algorithms": asdict(config.algorithms),
            "evaluation": asdict(config.evaluation),
            "visual": asdict(config.visual) if result.visual else None,
        },
        "config": str(config.source) if config.source else None,
        "evaluation": scores,
        "gate": result.gate.record(),
    }
    tables = {
        "itemitem": lambda: sqlfiles.query(connection, "snapshot_itemitem").to_arrow_reader(1 << 17),
        "lists": lambda: sqlfiles.query(connection, "snapshot_lists").to_arrow_reader(1 << 17),
        "products": lambda: connection.table("products").to_arrow_reader(1 << 17),
    }
    folders = {visual_stage.INDEX_FOLDER: result.visual.index_folder} if result.visual else None
    return snapshot.stage(config.snapshots.root, result.build_id, tables, manifest, folders)


def _record(connection: duckdb.DuckDBPyConnection, config: Config, result: BuildResult, started: dt.datetime) -> None:
    """Append this build to the ``builds`` history table."""
    sqlfiles.create_table(
        connection, "build_record", record_values(config, result, started), table="this_build", temporary=True
    )
    warehouse.append_history(connection, "builds", "this_build")


def record_values(config: Config, result: BuildResult, started: dt.datetime) -> dict:
    """The parameters of ``sql/build_record.sql`` for this build (the Spark engine binds the same)."""
    totals = {
        key: sum(row[key] for row in result.ingest)
        for key in ("events_read", "dropped_duplicate", "dropped_corrupt", "events_kept")
    }
    return {
        "build_id": result.build_id,
        "started_at": started.replace(tzinfo=None),
        "finished_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "config_path": str(config.source) if config.source else None,
        "parameters": json.dumps(asdict(config.algorithms)),
        "event_files": sum(result.files.values()),
        **totals,
        "itemitem_rows": result.rows.get("itemitem", 0),
    }
