"""``etalage build``: events in, the recommendation tables out, in a new warehouse file.

The steps, in order, each a file in ``sql/`` unless noted:

1. find and check the event files (``engine.ingest``), map them, keep the
   unflagged ones (``events``) and count the rest (``ingest_stats``); load the
   catalogue (``products``) and the server's exposure log (``exposures``,
   scored into ``click_through``);
2. ``session_items``, ``item_counts``, ``tenant_sessions``;
3. ``itemitem``: by the SQL path (``pair_counts``, ``ranked_pairs``,
   ``popular``, ``itemitem``; ``pairs="sql"``) or by the Numba kernel
   (default), which computes the same rows from ``item_index`` and
   ``baskets`` without materialising every pair;
4. unless ``[evaluation]`` turns it off, the same stage again on the events
   before the cut-off (schema ``holdout``, dropped afterwards), scored on the
   sessions after it (``test_items``, ``evaluation``) into ``evaluation``;
5. a row in ``builds``;
6. the evaluation gate (``engine.gate``): a build that scores clearly worse
   than the live snapshot stops here, and nothing changes;
7. a snapshot (``engine.snapshot``) staged and verified beside the live one;
   the warehouse file is replaced, then the snapshot is switched live and old
   snapshots are pruned.

A build holds the snapshots root's lock from start to end, so two cron runs
never interleave; the second exits with "busy".
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, ContextManager, Iterator, Literal, Protocol

import duckdb

from engine import (
    crashpoints,
    evaluation,
    exposures,
    gate,
    ingest,
    itemitem,
    snapshot,
    sqlfiles,
    warehouse,
)
from engine.config import Config

PUBLISHED_TABLES = (
    "events", "ingest_stats", "products", "exposures", "click_through",
    "session_items", "item_counts", "tenant_sessions", "itemitem",
)
"""Tables a build leaves in the warehouse for analysts (plus the history table ``builds``)."""


class Reporter(Protocol):
    """Where a build tells what it is doing: the CLI prints it, tests ignore it."""

    def step(self, name: str) -> ContextManager[dict]:
        """Wraps one step; the step may put ``rows`` into the yielded dict."""

    def files(self, total: int) -> ContextManager[Callable[[str], None]]:
        """Wraps the file check; yields a function called once per file checked."""


class Silent:
    """A :class:`Reporter` that says nothing."""

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        yield {}

    @contextmanager
    def files(self, total: int) -> Iterator:
        yield lambda path: None


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
        return _build(config, pairs, force, reporter or Silent())


def _build(config: Config, pairs: Literal["kernel", "sql"], force: bool, reporter: Reporter) -> BuildResult:
    started = dt.datetime.now(dt.timezone.utc)
    build_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    files = ingest.find(config.events)
    with reporter.files(len(files)) as advance:
        ingest.check(files, config.events.mapping, advance)
    result = BuildResult(
        build_id=build_id,
        warehouse=str(config.warehouse),
        files={fmt: len(paths) for fmt, paths in files.by_format().items()},
        ingest=[],
    )
    parameters = {**config.algorithms.parameters(), "until": None}

    def timed(name: str, create) -> None:
        begin = time.perf_counter()
        with reporter.step(name) as info:
            create()
            if name in PUBLISHED_TABLES:
                result.rows[name] = connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                info["rows"] = result.rows[name]
        result.seconds[name] = round(time.perf_counter() - begin, 3)

    with warehouse.rebuild(config.warehouse) as connection:
        timed("events", lambda: ingest.load_events(connection, files, config.events.mapping))
        timed("products", lambda: ingest.load_catalogue(connection, config.catalogue))
        timed("exposures", lambda: exposures.load(connection, config.serving.exposures))
        timed("click_through", lambda: sqlfiles.create_table(connection, "click_through"))
        crashpoints.reach("compute")
        itemitem.stage(connection, pairs, parameters, timed)
        if config.evaluation.enabled:
            evaluation.evaluate(
                connection, config, pairs, result.build_id, lambda name, create: timed(f"evaluation {name}", create)
            )
        result.ingest = [
            dict(zip(("source_format", "events_read", "dropped_duplicate", "dropped_corrupt", "events_kept"), row))
            for row in connection.execute("SELECT * FROM ingest_stats").fetchall()
        ]
        _record(connection, config, result, started)
        scores = _scores(connection, result.build_id) if config.evaluation.enabled else None
        result.gate = gate.decide(scores, snapshot.live(config.snapshots.root), config.snapshots.gate_algorithm,
                                  config.snapshots.max_mrr_drop, force)
        if not result.gate.publish:
            raise gate.GateRefused(result.gate)
        staged = {}
        timed("snapshot", lambda: staged.setdefault("snapshot", _stage(connection, config, result, scores)))
    result.snapshot = snapshot.publish(config.snapshots.root, staged["snapshot"])
    result.pruned = snapshot.prune(config.snapshots.root, config.snapshots.keep)
    return result


def _scores(connection: duckdb.DuckDBPyConnection, build_id: str) -> dict[str, dict]:
    """This build's evaluation, per algorithm, as the manifest records it."""
    rows = connection.execute("SELECT * EXCLUDE (build_id, parameters) FROM evaluation WHERE build_id = $id",
                              {"id": build_id}).to_arrow_table().to_pylist()
    return {row.pop("algorithm"): row for row in rows}


def _stage(connection: duckdb.DuckDBPyConnection, config: Config, result: BuildResult, scores: dict | None) -> snapshot.Snapshot:
    """Write this build's snapshot beside the live one (not yet live)."""
    manifest = {
        "parameters": {"algorithms": asdict(config.algorithms), "evaluation": asdict(config.evaluation)},
        "config": str(config.source) if config.source else None,
        "evaluation": scores,
        "gate": result.gate.record(),
    }
    tables = {name: lambda name=name: connection.table(name).to_arrow_reader(1 << 17) for name in ("itemitem", "products")}
    return snapshot.stage(config.snapshots.root, result.build_id, tables, manifest)


def _record(connection: duckdb.DuckDBPyConnection, config: Config, result: BuildResult, started: dt.datetime) -> None:
    """Append this build to the ``builds`` history table."""
    totals = {key: sum(row[key] for row in result.ingest) for key in ("events_read", "dropped_duplicate", "dropped_corrupt", "events_kept")}
    row = {
        "build_id": result.build_id,
        "started_at": started.replace(tzinfo=None),
        "finished_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "config_path": str(config.source) if config.source else None,
        "parameters": json.dumps(asdict(config.algorithms)),
        "event_files": sum(result.files.values()),
        **totals,
        "itemitem_rows": result.rows.get("itemitem", 0),
    }
    sqlfiles.create_table(connection, "build_record", row, table="this_build", temporary=True)
    warehouse.append_history(connection, "builds", "this_build")
