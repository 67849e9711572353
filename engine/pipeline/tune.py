"""``etalage tune``: a small grid over the algorithm parameters, scored by the build's evaluation.

Every trial ranks the lists of the events before the cut-off with its
parameters and scores them exactly as a build does; all trials go to the
``tuning`` table, and the best setting is the one with the highest MRR@20 of
any co-occurrence algorithm. Trials that count sessions alike (the same bot
rule, window and sequential-rule reach) share one counting: only the ranking differs between them.

A higher MRR@20 may be luck, so the best trial is also set against the
config's own setting (when the grid holds it) for the same algorithm: the
difference and its paired bootstrap interval over their test sessions
(:class:`Lead`). Trials with another bot rule score other test sessions,
and are not paired.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
from msgspec.structs import replace

from engine.config import TUNING_GRID, Algorithms, Config
from engine.pipeline import evaluation
from engine.publish import warehouse


def trials(base: Algorithms, grid: Mapping[str, Iterable[int]]) -> list[Algorithms]:
    """Every combination of the grid's values, the other parameters as in ``base``."""
    keys = list(grid)
    return [replace(base, **dict(zip(keys, values, strict=True))) for values in itertools.product(*grid.values())]


@dataclass(frozen=True)
class Lead:
    """The best trial against the trial of the config's own setting, for the best trial's algorithm."""

    best_trial: int
    current_trial: int | None  # None: the grid does not hold the config's setting
    algorithm: str
    paired: bool = False  # both scored the same test sessions (the same bot rule and event types)
    difference: float | None = None  # MRR@20, the best trial's less the current one's
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        """The comparison in words, for the command's output."""
        if self.current_trial is None:
            return "the config's own setting is not among the trials, so the best is not set against it"
        if self.current_trial == self.best_trial:
            return f"the config's own setting (trial {self.current_trial}) is the best"
        if not self.paired or self.difference is None or self.low is None or self.high is None:
            return (
                f"the config's own setting (trial {self.current_trial}) scored other test sessions "
                "(another bot rule), so the two are not compared by a paired interval"
            )
        verdict = "clearly better" if self.low > 0 else "not clearly better: the interval holds 0"
        return (
            f"{self.algorithm} {self.difference:+.4f} MRR@20 against the config's own setting (trial "
            f"{self.current_trial}), 95% interval {self.low:+.4f} to {self.high:+.4f}: {verdict}"
        )


def tune(
    config: Config,
    grid: Mapping[str, Iterable[int]] | None = None,
    progress: Callable[[int, Algorithms], None] = lambda done, trial: None,
) -> tuple[str, pa.Table, Lead | None]:
    """Run every trial on the warehouse's events and append them to ``tuning``.

    Returns the tune id, its rows (best first), and the best trial set
    against the config's own setting (None when no trial scored a test session).
    """
    tune_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    settings = trials(config.algorithms, grid or TUNING_GRID)
    current = next((number for number, trial in enumerate(settings, start=1) if trial == config.algorithms), None)
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
    own: evaluation.Scored | None = None  # the scores of the config's own setting
    leaders: dict[tuple, tuple[tuple, evaluation.Scored]] = {}  # per set of test sessions, its best trial so far
    done = 0
    with warehouse.amend(config.warehouse) as connection:
        split = evaluation.cutoff(connection, config)
        for group in counted_alike.values():
            trained, deltas = evaluation.training_from_scratch(connection, group[0][1], split)
            for number, algorithms in group:
                scored = evaluation.scored(
                    connection, trained, deltas, algorithms, split, served=config.snapshots.gate_algorithm
                )
                evaluation.record(
                    connection,
                    "tuning",
                    scored.rows,
                    algorithms,
                    tune_id=tune_id,
                    trial=number,
                    cutoff=split,
                    **{key: getattr(algorithms, key) for key in TUNING_GRID},
                )
                own = scored if number == current else own
                _lead_with(leaders, _tested_alike(algorithms), number, scored)
                done += 1
                progress(done, algorithms)
        result = connection.execute(
            """
            SELECT trial, min_support, max_session_items, top_n, look_back_days, sr_window, algorithm, mrr, mrr_at_20, hit_rate_at_20, coverage
            FROM tuning WHERE tune_id = $tune_id ORDER BY mrr_at_20 DESC, trial, algorithm
            """,
            {"tune_id": tune_id},
        ).to_arrow_table()
    if not result.num_rows:
        return tune_id, result, None
    best = result.slice(0, 1).to_pylist()[0]
    return tune_id, result, _lead(best["trial"], best["algorithm"], current, own, leaders, settings)


def _tested_alike(algorithms: Algorithms) -> tuple:
    """What decides a trial's test sessions (``evaluation.test_sessions``): equal for two trials, they score the same."""
    return (algorithms.event_types, algorithms.max_session_items, algorithms.max_views_per_minute)


def _lead_with(
    leaders: dict[tuple, tuple[tuple, evaluation.Scored]], tested: tuple, number: int, scored: evaluation.Scored
) -> None:
    """Keep ``scored`` as its test sessions' leader if it has the best row yet, in the order of tune's result."""
    rows = scored.rows
    scores = zip(rows.column("mrr_at_20").to_pylist(), rows.column("algorithm").to_pylist(), strict=True)
    order = min((-mrr, number, name) for mrr, name in scores)  # MRR@20 first, then trial, then algorithm
    if tested not in leaders or order < leaders[tested][0]:
        leaders[tested] = (order, scored)


def _lead(
    best: int,
    algorithm: str,
    current: int | None,
    own: evaluation.Scored | None,
    leaders: dict[tuple, tuple[tuple, evaluation.Scored]],
    settings: list[Algorithms],
) -> Lead:
    """The best trial's ``algorithm`` against the current trial's, paired when both scored the same test sessions."""
    lead = Lead(best, current, algorithm)
    tested = _tested_alike(settings[best - 1])
    if current is None or current == best or own is None or tested != _tested_alike(settings[current - 1]):
        return lead
    winner = leaders[tested][1]  # the best trial leads its own test sessions
    difference, low, high = evaluation.difference(winner.gains[algorithm], own.gains[algorithm], winner.sizes)
    return Lead(best, current, algorithm, True, difference, low, high)
