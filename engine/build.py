"""``etalage build``: new events in, the counts changed by what they change, the lists and a snapshot out.

The steps, in order, each a file in ``sql/`` unless noted:

1. find the event files (local, or on an object store: ``engine.ingest.locations``)
   and compare them with the ledger of ingested files (``engine.ingest.ledger``):
   only new ones are read, less those whose ``date=``/``hour=`` partition lies
   before the look-back window; a changed or vanished one stops the build.
   How the stored counts were counted is compared with
   the config (``engine.pipeline.state``): a change there, ``--full`` or a
   first build counts everything again;
2. check the new files and store their unflagged events once, as this
   build's batch (``engine.ingest.events``; ``events``, ``file_counts``);
   load the catalogue (``products``) and the server's exposure log
   (``exposures``, scored into ``click_through``);
3. with ``[visual] enabled``, the visual stage (``engine.pipeline.visual_stage``):
   the catalogue's pictures through the encoder (new ones only, by the
   embeddings cache) into an Annoy index and the ``visual`` rows;
4. the counts (``engine.pipeline.sessions``, ``engine.pipeline.counts``):
   the sessions whose counted products changed (``changed_sessions``) are
   read before and after, and the signed difference is added to the stored
   counts of items, tenants and pairs;
5. ``itemitem``: the lists ranked from the counts by the kernel (or by the
   SQL path, ``pair_counts`` .. ``itemitem``), then the ``visual`` rows and
   their cold-start blend; written to the store while the evaluation runs;
6. unless ``[evaluation]`` turns it off, the evaluation
   (``engine.pipeline.evaluation``): the counts minus the test period's
   sessions, ranked and scored on those sessions, into ``evaluation``;
7. the served algorithm (``engine.publish.gate.served_algorithm``: with
   ``gate_algorithm = "auto"`` the best by the evaluation's MRR@20, or the
   live snapshot's while the best is not clearly better), a row in
   ``builds``, and the evaluation gate (``engine.publish.gate``): a build
   that scores clearly worse than the live snapshot stops here, and nothing
   changes;
8. the new state and views in the new warehouse, a snapshot staged and
   verified beside the live one; the warehouse file is replaced, the snapshot
   switched live, and old snapshots and store files no warehouse names removed.

A build holds the snapshots root's lock from start to end, so two cron runs
never interleave; the second exits with "busy".
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import duckdb
import pyarrow as pa
from msgspec.structs import asdict

from engine import sqlfiles
from engine.config import Config
from engine.ingest import catalogue, events, exposures, files, ledger
from engine.pipeline import counts as counting
from engine.pipeline import evaluation, itemitem, kept_lists, sessions, state, visual_stage
from engine.publish import crashpoints, gate, served, snapshot, warehouse
from engine.publish.store import Store
from engine.udfs import cooccurrence

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
"""Tables (and views) a build leaves in the warehouse for analysts (plus the history tables)."""


class Reporter(Protocol):
    """Where a build tells what it is doing: the CLI prints it, tests ignore it."""

    def step(self, name: str) -> AbstractContextManager[dict]:
        """Wraps one step; the step may put ``rows`` into the yielded dict."""

    def files(self, total: int) -> AbstractContextManager[Callable[[str], None]]:
        """Wraps the file check; yields a function called once per file checked."""

    def bar(self, description: str) -> AbstractContextManager[Callable[..., None]]:
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
    counting: str = "full"  # full | recount | incremental
    counting_reason: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    gate: gate.Decision | None = None
    served_algorithm: str | None = None  # what the recommendations route serves (chosen by the evaluation with auto)
    served_reason: str | None = None  # why: configured, the best, or kept from the live snapshot
    snapshot: snapshot.Snapshot | None = None
    pruned: list[str] = field(default_factory=list)
    before_window: int = 0
    visual: visual_stage.VisualOutput | None = None


def build(
    config: Config,
    *,
    pairs: Literal["kernel", "sql"] = "kernel",
    force: bool = False,
    full: bool = False,
    reporter: Reporter | None = None,
) -> BuildResult:
    """Bring the warehouse up to date with the new events and publish a snapshot, atomically.

    Nothing live changes unless every step succeeds and the gate passes (or
    ``force``): on :class:`gate.GateRefused` the warehouse and the live
    snapshot are as they were. ``full`` ingests and counts every file again.
    """
    with snapshot.locked(config.snapshots.root):
        snapshot.clean(config.snapshots.root)
        snapshot.recover(config.snapshots.root)  # a broken `current` would stop the build after all its work
        return _build(config, pairs, force, full, reporter or Silent())


def _build(config: Config, pairs: Literal["kernel", "sql"], force: bool, full: bool, reporter: Reporter) -> BuildResult:
    started = dt.datetime.now(dt.UTC)
    found = files.find(config.events)
    result = BuildResult(new_build_id(started), str(config.warehouse), {}, [])
    store = Store(config.warehouse)
    algorithms = config.algorithms

    def timed(name: str, step: Callable[[], int | None]) -> None:
        begin = time.perf_counter()
        with reporter.step(name) as info:
            rows = step()
            if rows is not None:
                result.rows[name] = info["rows"] = rows
        result.seconds[name] = round(time.perf_counter() - begin, 3)

    def looks(folder: Path) -> None:
        with reporter.bar("encoding pictures") as progress:
            result.visual = visual_stage.compute(connection, config, folder, progress)

    with (
        warehouse.rebuild(config.warehouse, config.memory_limit) as connection,
        tempfile.TemporaryDirectory(  # a killed build's is cleaned like staging
            prefix=f"{snapshot.STAGING_PREFIX}visual-", dir=config.snapshots.root
        ) as scratch,
        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store") as background,
        _EarlyStaging() as staging,
    ):
        earlier = state.load(connection, store) if _attached(connection) else None
        result.counting, result.counting_reason = state.how_to_count(config, earlier, full)
        kept = earlier if result.counting != "full" else None  # the state this build carries on from
        incremental = kept if result.counting == "incremental" else None
        carried = kept is not None
        unread = ledger.new_files(found, kept.ledger if kept else {}, store.folder)
        new = files.prune(unread, files.window_floor(found, algorithms, config.evaluation))
        result.before_window = len(unread) - len(new)
        result.files = {fmt: len(paths) for fmt, paths in new.by_format().items()}
        with reporter.files(len(new)) as advance:
            files.check(new, config.events.mapping, advance)
        held: dict = {"counts": []}

        def ingest() -> int:
            target = store.new("events", f"{result.build_id}.parquet")
            held["counts"] = events.write_batch(connection, new, config.events.mapping, target)
            kept = sum(row["events_kept"] for row in held["counts"])
            held["batch"] = {"path": store.relative(target), "events": kept}
            return kept

        if len(new):
            timed("events", ingest)
            crashpoints.reach("ingested")
        ingested = ledger.entries(new, held["counts"], store.folder, result.build_id)
        batches = (kept.batches if kept else []) + ([held["batch"]["path"]] if "batch" in held else [])
        sqlfiles.create_view(connection, "stored_rows", {"files": store.paths(batches)}, view="events")

        def products() -> int:
            held["catalogue"] = _catalogue(connection, config, store, kept, result.build_id)
            return held["catalogue"]["rows"]

        timed("products", products)
        timed("exposures", lambda: exposures.load(connection, config.serving.exposures))
        timed("click_through", lambda: sqlfiles.create_table(connection, "click_through"))
        if config.visual.enabled:
            timed("visual", lambda: looks(Path(scratch) / visual_stage.INDEX_FOLDER))
        newest = sessions.newest(connection)
        crashpoints.reach("compute")
        # Counting everything with the evaluation on: the training's counts first, then the test period added.
        split = evaluation.cutoff(connection, config) if _training_first(config, pairs, incremental, newest) else None

        def count_training() -> None:
            assert split is not None
            trained, deltas = evaluation.training_from_scratch(connection, algorithms, split)
            held["trained"] = trained.stored(deltas)

        def count() -> int:
            recounted = None  # an incremental build's changed sessions (every session otherwise)
            if incremental is not None:
                _changed_sessions(
                    connection, store, incremental, newest, held.get("batch"), held["catalogue"]["changed"], config
                )
                # Read before with_changes drops the tables.
                recounted = sqlfiles.scalar(
                    connection.execute("SELECT count(DISTINCT (tenant, session_id)) FROM counted_changes")
                )
                changed, deltas = incremental.counts.with_changes(connection, algorithms.sr_window)
                held["reused"] = kept_lists.reusable(
                    store, incremental.lists, incremental.counts, changed, deltas, algorithms, evidence=True
                )
            elif split is not None:
                changed, deltas = evaluation.published_from_training(connection, held["trained"], algorithms, split)
            else:
                before = counting.Counts.none(counting.matrices(algorithms.compute))
                after = sessions.Counting("events", "products", sessions.parameters(algorithms, None, newest))
                sessions.count_changes(connection, None, after, steps=before.follows)
                changed, deltas = before.with_changes(connection, algorithms.sr_window)
            held["counted"] = changed.stored(deltas)
            return sum(changed.tenant_sessions.values()) if recounted is None else recounted

        if split is not None:
            timed("evaluation training counts", count_training)
        timed("counts", count)
        crashpoints.reach("counted")
        counted: counting.Counts = held["counted"]
        result.rows["item_counts"] = int((counted.sessions > 0).sum())

        def lists() -> int:
            if pairs == "sql":
                rows = _sql_rows(connection, config, newest, timed)
            else:
                reused = held.pop("reused", None)
                items, ranked = itemitem.kernel_lists(counted, algorithms, reused.start if reused else None)
                if kept_lists.worth_keeping(algorithms):
                    held["lists"] = background.submit(
                        kept_lists.save, store, result.build_id, ranked, algorithms, reused
                    )
                rows = cooccurrence.rows_table(items, ranked)
            if result.visual:
                parameters = {**algorithms.parameters(), "min_sessions": config.visual.min_sessions}
                rows = itemitem.with_visual(
                    connection, rows, result.visual.rows, itemitem.item_counts(counted), parameters
                )
            held["itemitem"] = rows = itemitem.typed(rows)
            result.rows["itemitem"] = rows.num_rows
            return rows.num_rows

        timed("lists", lists)
        itemitem_file = store.new("itemitem", f"{result.build_id}.parquet")

        # The store's copy is written while the evaluation runs (neither reads the other); the step is the wait for it.
        stored = background.submit(itemitem.write, held["itemitem"], itemitem_file)
        live = snapshot.live(config.snapshots.root)
        products_table = connection.table("products").to_arrow_table()
        staging.start(functools.partial(_stage, config, result, products_table, held.pop("itemitem"), live))
        training = None
        if config.evaluation.enabled:
            kept_training = incremental.training if incremental else None
            trained = held["trained"].numbered_as(counted) if "trained" in held else None
            training = _evaluate(
                connection, config, store, counted, kept_training, trained, pairs, result, timed, background
            )
        timed("itemitem", stored.result)
        result.ingest = _ingest_rows(ingested)
        counted = state.write(
            connection,
            store,
            result.build_id,
            carried=carried,
            ingested=ingested,
            batch=held.get("batch"),
            counts=counted,
            catalogue={key: held["catalogue"][key] for key in ("path", "rows", "checksum")},
            itemitem_file=store.relative(itemitem_file),
            lists=held["lists"].result() if "lists" in held else None,
            training=training,
        )
        crashpoints.reach("stored")
        _views(connection, config, store, held["catalogue"]["path"], itemitem_file, newest)
        scores = _scores(connection, result.build_id) if config.evaluation.enabled else None
        chosen = gate.served_for(scores, config, live)
        result.served_algorithm, result.served_reason = chosen.algorithm, chosen.reason
        _record(connection, config, result, started, newest)
        result.gate = gate.decide(
            scores,
            live,
            result.served_algorithm,
            config.snapshots.max_mrr_drop,
            force,
        )
        if not result.gate.publish:
            raise gate.GateRefused(result.gate)
        staged: dict[str, snapshot.Snapshot] = {}
        timed("snapshot", lambda: staged.update(snapshot=staging.finish(_decided(result, scores))))
        named = state.named_files(connection)
    result.snapshot = snapshot.publish(config.snapshots.root, staged["snapshot"])
    store.collect(named)
    result.pruned = snapshot.prune(config.snapshots.root, config.snapshots.keep)
    return result


def new_build_id(started: dt.datetime) -> str:
    """A build's id: its start time to the microsecond (so ids sort in time, even two builds a second apart) and a random suffix."""
    return f"{started:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"


def _attached(connection: duckdb.DuckDBPyConnection) -> bool:
    query = "SELECT count(*) FROM duckdb_databases() WHERE database_name = 'previous'"
    return bool(sqlfiles.scalar(connection.execute(query)))


def _training_first(config: Config, pairs: str, incremental: state.State | None, newest: dt.datetime | None) -> bool:
    """Whether this build counts the evaluation's training before the published counts, which are then the training's
    plus the test period (``evaluation.published_from_training``): when it counts every event by the kernels."""
    return config.evaluation.enabled and pairs == "kernel" and incremental is None and newest is not None


def _changed_sessions(
    connection: duckdb.DuckDBPyConnection,
    store: Store,
    earlier: state.State,
    newest: dt.datetime | None,
    arrived: dict | None,
    catalogue_changed: bool,
    config: Config,
) -> None:
    """``counted_changes`` for an incremental build: the changed sessions as counted before and as counted now."""
    look_back = config.algorithms.look_back_days
    sqlfiles.create_view(
        connection, "stored_rows", {"files": store.paths(earlier.batches)}, view="stored_events", temporary=True
    )
    if arrived:
        files = {"files": store.paths([arrived["path"]])}
        sqlfiles.create_view(connection, "stored_rows", files, view="arrived_events", temporary=True)
    else:
        connection.execute("CREATE TEMPORARY TABLE arrived_events AS FROM stored_events LIMIT 0")
    connection.execute("CREATE TEMPORARY VIEW previous_products AS FROM previous.products")
    window = {
        "window_was": sessions.window_start(earlier.newest, look_back),
        "window_is": sessions.window_start(newest, look_back),
    }
    if catalogue_changed:
        sqlfiles.create_table(connection, "catalogue_changes", temporary=True)
    else:
        connection.execute(
            "CREATE OR REPLACE TEMPORARY TABLE catalogue_changes AS SELECT tenant, product_id FROM products LIMIT 0"
        )
    sqlfiles.create_table(connection, "changed_sessions", window, temporary=True)
    sessions.changed_events(connection)
    sqlfiles.create_table(connection, "events_before", temporary=True)
    sessions.count_changes(
        connection,
        before=sessions.Counting(
            "events_before", "previous_products", sessions.parameters(config.algorithms, None, earlier.newest)
        ),
        after=sessions.Counting("changed_events", "products", sessions.parameters(config.algorithms, None, newest)),
        steps=earlier.counts.follows,
    )


def _sql_rows(
    connection: duckdb.DuckDBPyConnection, config: Config, newest: dt.datetime | None, timed: itemitem.Timed
) -> pa.Table:
    """The lists by the SQL path, from every session's items (counted again, in SQL)."""
    parameters = sessions.parameters(config.algorithms, None, newest)
    sqlfiles.create_table(connection, "session_items", parameters, temporary=True)
    try:
        return itemitem.sql_rows(connection, parameters, timed)
    finally:
        connection.execute("DROP TABLE session_items")


def _evaluate(
    connection: duckdb.DuckDBPyConnection,
    config: Config,
    store: Store,
    counted: counting.Counts,
    kept: state.Training | None,
    trained: counting.Counts | None,
    pairs: str,
    result: BuildResult,
    timed,
    background: concurrent.futures.Executor,
) -> state.Training | None:
    """Score this build's algorithms on the evaluation split into ``evaluation``; return the training counts to keep.

    The training counts are ``trained`` when this build counted them before
    the published ones (:func:`_training_first`), the last build's
    (``kept``) changed by delta when this build counts incrementally, else
    ``counted`` less the test period's sessions; so are the test sessions,
    when the cut-off did not move back. The SQL path counts its own and
    keeps none. The training lists are kept (``background``) while the scores are computed.
    """
    split = evaluation.cutoff(connection, config)
    served = config.snapshots.gate_algorithm
    visual_rows = result.visual.rows if result.visual else None
    prefixed = lambda name, step: timed(f"evaluation {name}", lambda: step() and None)  # noqa: E731
    training = None
    if pairs == "sql":
        rows = evaluation.scores_by_sql(
            connection, config.algorithms, split, prefixed, visual_rows, config.visual.min_sessions, served
        )
    else:
        held = {}

        def train() -> None:
            if kept is None:
                held["trained"] = evaluation.training(connection, counted, config.algorithms, split)
            else:
                held["trained"] = evaluation.training_by_delta(connection, kept, config.algorithms, split)

        if trained is not None:
            held["trained"] = trained, {}
        else:
            prefixed("training counts", train)
        trained, deltas = held["trained"]
        saving: dict[str, concurrent.futures.Future[kept_lists.Files]] = {}
        tested_before = kept.test_sessions if kept is not None and kept.cutoff <= split else None
        evidence = evaluation.with_evidence(visual_rows)
        reused = (
            kept_lists.reusable(store, kept.lists, kept.counts, trained, deltas, config.algorithms, evidence=evidence)
            if kept
            else None
        )
        scored = evaluation.scored(
            connection, trained, deltas, config.algorithms, split, prefixed, visual_rows,
            config.visual.min_sessions, served, store.paths([tested_before]) if tested_before else None,
            reused.start if reused else None,
            (lambda lists: saving.update(training=background.submit(
                kept_lists.save, store, f"{result.build_id}-training", lists, config.algorithms, reused
            ))) if kept_lists.worth_keeping(config.algorithms) else None,
        )  # fmt: skip
        rows = scored.rows
        tested = store.new("evaluation", f"{result.build_id}-test-sessions.parquet")
        connection.table("test_sessions").write_parquet(str(tested))
        newest = sessions.newest(connection, until=split)
        training = state.Training(
            split,
            newest,
            trained.stored(deltas),
            store.relative(tested),
            saving["training"].result() if saving else None,
        )
    evaluation.record(connection, "evaluation", rows, config.algorithms, build_id=result.build_id, cutoff=split)
    return training


def _catalogue(
    connection: duckdb.DuckDBPyConnection, config: Config, store: Store, earlier: state.State | None, build_id: str
) -> dict:
    """The temporary table ``products``: the kept copy if the catalogue file is unchanged, else the file, then kept.

    Returns where the copy is kept (a store path), the file's checksum, its
    rows, and whether it changed since the last build.
    """
    checksum = catalogue.checksum(config.catalogue)
    kept = earlier.catalogue if earlier else None
    if kept and kept["checksum"] == checksum:
        files = {"files": store.paths([kept["path"]])}
        sqlfiles.create_table(connection, "stored_rows", files, table="products", temporary=True)
        path, changed = kept["path"], False
    else:
        catalogue.load_catalogue(connection, config.catalogue)
        target = store.new("catalogue", f"{build_id}.parquet")
        connection.table("products").write_parquet(str(target))
        path, changed = store.relative(target), True
    rows = sqlfiles.scalar(connection.execute("SELECT count(*) FROM products"))
    return {"path": path, "checksum": checksum, "rows": rows, "changed": changed}


def _ingest_rows(ingested: pa.Table) -> list[dict]:
    """What this build read and dropped, per source format."""
    totals: dict[str, dict] = {}
    for row in ingested.to_pylist():
        into = totals.setdefault(row["format"], {"source_format": row["format"]})
        for key in ("events_read", "dropped_duplicate", "dropped_corrupt", "events_kept"):
            into[key] = into.get(key, 0) + row[key]
    return list(totals.values())


def _views(
    connection: duckdb.DuckDBPyConnection,
    config: Config,
    store: Store,
    catalogue_file: str,
    itemitem_file: Path,
    newest: dt.datetime | None,
) -> None:
    """The analysts' views of the new warehouse (``events`` is already there): over the store and the state."""
    sqlfiles.create_view(connection, "stored_rows", {"files": [str(itemitem_file)]}, view="itemitem")
    sqlfiles.create_view(connection, "stored_rows", {"files": store.paths([catalogue_file])}, view="products")
    sqlfiles.create_view(connection, "session_items", sessions.parameters(config.algorithms, None, newest))
    sqlfiles.create_view(connection, "kept_item_counts", view="item_counts")
    sqlfiles.create_view(connection, "ingest_stats")


def _scores(connection: duckdb.DuckDBPyConnection, build_id: str) -> dict[str, dict]:
    """This build's evaluation, per algorithm, as the manifest records it."""
    rows = connection.execute("SELECT * FROM evaluation WHERE build_id = $id", {"id": build_id}).to_arrow_table()
    return served.scores(rows.to_pylist(), build_id)


class StagingCancelled(Exception):
    """The build stopped (an error, or a gate that refused) while its snapshot was being staged."""


class _EarlyStaging(AbstractContextManager):
    """The snapshot staged in a thread of its own while the evaluation runs, but for the manifest's late fields.

    What a snapshot serves is known once the lists are: only the manifest's
    evaluation, served algorithm and gate wait for the evaluation, so the
    staging waits for them (:meth:`finish`) after writing and linking the
    files. Leaving the block before that cancels it: the staging folder is
    removed. Where Numba's parallel kernels cannot run in two threads at
    once (its ``workqueue`` layer aborts the process) it is staged at the end.
    """

    def __init__(self) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._decided: concurrent.futures.Future[dict] = concurrent.futures.Future()
        self._stage: Callable[[Callable[[], dict]], snapshot.Snapshot] | None = None
        self._staged: concurrent.futures.Future[snapshot.Snapshot] | None = None

    def start(self, stage: Callable[[Callable[[], dict]], snapshot.Snapshot]) -> None:
        """Begin ``stage``, which calls its argument for the late fields when its files are written."""
        self._stage = stage
        if _kernels_run_concurrently():
            self._staged = self._thread.submit(stage, self._decided.result)

    def finish(self, decided: dict) -> snapshot.Snapshot:
        """The staged snapshot, its manifest completed with ``decided``."""
        assert self._stage is not None, "start() comes first"
        self._decided.set_result(decided)
        return self._staged.result() if self._staged else self._stage(self._decided.result)

    def __exit__(self, *error: object) -> None:
        if not self._decided.done():
            self._decided.set_exception(StagingCancelled("the build stopped before its snapshot was complete"))
        self._thread.shutdown(wait=True)  # a cancelled staging has removed its folder


def _kernels_run_concurrently() -> bool:
    """Whether Numba's parallel kernels may run in two threads at once (not with its ``workqueue`` layer)."""
    import numba

    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run in this process yet: take no chance
        return False


def _stage(
    config: Config,
    result: BuildResult,
    products: pa.Table,
    rows: pa.Table,
    live: snapshot.Snapshot | None,
    decided: Callable[[], dict],
) -> snapshot.Snapshot:
    """Write this build's snapshot beside the ``live`` one (not yet live), from its ``itemitem`` rows, reusing what it can.

    ``decided`` gives the manifest's fields that the evaluation and the gate decide (:func:`_decided`).
    """
    parameters = {
        "algorithms": asdict(config.algorithms),
        "evaluation": asdict(config.evaluation),
        "visual": asdict(config.visual) if result.visual else None,
    }
    return served.stage(
        config.snapshots.root,
        result.build_id,
        rows,
        products,
        lambda: {"parameters": parameters, "config": str(config.source) if config.source else None, **decided()},
        folders={visual_stage.INDEX_FOLDER: result.visual.index_folder} if result.visual else None,
        live=live,
    )


def _decided(result: BuildResult, scores: dict | None) -> dict:
    """The manifest's fields that the evaluation and the gate decide."""
    return {
        "evaluation": scores,
        "served_algorithm": result.served_algorithm,
        "served_reason": result.served_reason,
        "gate": result.gate.record() if result.gate else None,
    }


def _record(
    connection: duckdb.DuckDBPyConnection,
    config: Config,
    result: BuildResult,
    started: dt.datetime,
    newest: dt.datetime | None,
) -> None:
    """Append this build to the ``builds`` history table."""
    values = {
        **record_values(config, result, started),
        "counting": result.counting,
        "counting_reason": result.counting_reason,
        "newest_event": newest,
        "counted_with": json.dumps(state.counted_with(config)),
    }
    sqlfiles.create_table(connection, "build_record", values, table="this_build", temporary=True)
    warehouse.append_history(connection, "builds", "this_build")


def record_values(config: Config, result: BuildResult, started: dt.datetime) -> dict:
    """The parameters of ``sql/build_record.sql`` that both engines bind (the Spark engine counts everything)."""
    totals = {
        key: sum(row[key] for row in result.ingest)
        for key in ("events_read", "dropped_duplicate", "dropped_corrupt", "events_kept")
    }
    return {
        "build_id": result.build_id,
        "started_at": started.replace(tzinfo=None),
        "finished_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "config_path": str(config.source) if config.source else None,
        "parameters": json.dumps(asdict(config.algorithms)),
        "event_files": sum(result.files.values()),
        **totals,
        "itemitem_rows": result.rows.get("itemitem", 0),
        "served_algorithm": result.served_algorithm,
    }


def checked_files(config: Config, target: str, reporter: Reporter) -> tuple[BuildResult, files.EventFiles, dt.datetime]:
    """The Spark engine's first step: its id, and every event file found and checked (nothing read yet)."""
    started = dt.datetime.now(dt.UTC)
    every = files.find(config.events)
    found = files.prune(every, files.window_floor(every, config.algorithms, config.evaluation))
    with reporter.files(len(found)) as advance:
        files.check(found, config.events.mapping, advance)
    result = BuildResult(
        build_id=new_build_id(started),
        warehouse=target,
        files={fmt: len(paths) for fmt, paths in found.by_format().items()},
        ingest=[],
        before_window=len(every) - len(found),
    )
    return result, found, started
