"""``etalage tune``: a small grid over the algorithm parameters, scored by the build's evaluation.

Every trial ranks the lists of the events before the cut-off with its
parameters and scores them exactly as a build does; all trials go to the
``tuning`` table, and the best setting is the one with the highest MRR@20 of
any co-occurrence algorithm. Trials that count sessions alike (the same bot
rule, window and sequential-rule reach) share one counting: only the ranking differs between them.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping

import pyarrow as pa
from msgspec.structs import replace

from engine.config import TUNING_GRID, Algorithms, Config
from engine.pipeline import evaluation
from engine.publish import warehouse


def trials(base: Algorithms, grid: Mapping[str, Iterable[int]]) -> list[Algorithms]:
    """Every combination of the grid's values, the other parameters as in ``base``."""
    keys = list(grid)
    return [replace(base, **dict(zip(keys, values, strict=True))) for values in itertools.product(*grid.values())]


def tune(
    config: Config,
    grid: Mapping[str, Iterable[int]] | None = None,
    progress: Callable[[int, Algorithms], None] = lambda done, trial: None,
) -> tuple[str, pa.Table]:
    """Run every trial on the warehouse's events and append them to ``tuning``; return the tune id and its rows."""
    tune_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    settings = trials(config.algorithms, grid or TUNING_GRID)
    counted_alike: dict[tuple, list[tuple[int, Algorithms]]] = {}
    for number, algorithms in enumerate(settings, start=1):
        key = (
            algorithms.event_types,
            algorithms.max_session_items,
            algorithms.max_views_per_minute,
            algorithms.look_back_days,
            algorithms.sr_window,
        )
        counted_alike.setdefault(key, []).append((number, algorithms))
    done = 0
    with warehouse.amend(config.warehouse) as connection:
        split = evaluation.cutoff(connection, config)
        for group in counted_alike.values():
            trained, deltas = evaluation.training_from_scratch(connection, group[0][1], split)
            for number, algorithms in group:
                rows = evaluation.scored(
                    connection, trained, deltas, algorithms, split, served=config.snapshots.gate_algorithm
                )
                evaluation.record(
                    connection,
                    "tuning",
                    rows,
                    algorithms,
                    tune_id=tune_id,
                    trial=number,
                    cutoff=split,
                    **{key: getattr(algorithms, key) for key in TUNING_GRID},
                )
                done += 1
                progress(done, algorithms)
        result = connection.execute(
            """
            SELECT trial, min_support, max_session_items, top_n, look_back_days, sr_window, algorithm, mrr, mrr_at_20, hit_rate_at_20, coverage
            FROM tuning WHERE tune_id = $tune_id ORDER BY mrr_at_20 DESC, trial, algorithm
            """,
            {"tune_id": tune_id},
        ).to_arrow_table()
    return tune_id, result
