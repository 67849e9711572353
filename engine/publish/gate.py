"""The evaluation gate: a build that scores clearly worse than the live snapshot is not published.

Cron rebuilds every hour; a broken upstream (a tracking change that loses
half the product views, a bad config push) should not silently replace good
recommendations with bad ones. The gate compares the new build's MRR@20 for
the algorithm it serves (:func:`served_algorithm`) with the live
snapshot's for the algorithm that one serves, as recorded in its manifest,
and refuses a drop of more than ``max_mrr_drop`` (a fraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.config import ALGORITHMS, AUTO, CLICK_ALGORITHMS, Config
from engine.publish.snapshot import UNSCORED, Snapshot

METRIC = "mrr_at_20"
"""What the gate compares, and what ``auto`` chooses the served algorithm by."""


@dataclass(frozen=True)
class Decision:
    """Whether to publish, and why, in words a cron log can show."""

    publish: bool
    verdict: str  # first | passed | refused | forced | skipped
    reason: str
    algorithm: str
    score: float | None = None
    live_build_id: str | None = None
    live_algorithm: str | None = None
    live_score: float | None = None
    max_drop: float | None = None

    def record(self) -> dict:
        """The decision as it goes into the manifest."""
        return {"metric": METRIC, **asdict(self)}


class GateRefused(RuntimeError):
    """The new build scores too far below the live snapshot; nothing was published."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class Served:
    """The algorithm a build serves, and why, in words a cron log can show."""

    algorithm: str
    reason: str


def served_algorithm(
    scores: dict[str, dict] | None,
    configured: str,
    computed: Sequence[str] = CLICK_ALGORITHMS,
    live: str | None = None,
) -> Served:
    """The algorithm a build serves: ``configured``, or for ``auto`` the best by :data:`METRIC` in ``scores``.

    Ties go to the algorithm named first in ``engine.config.ALGORITHMS``, so
    every build of the same data serves the same one. ``live`` is what the
    live snapshot serves: ``auto`` keeps serving it while this build's
    evaluation cannot tell it from the best (the 95% interval of its
    difference from the best, which its row carries, reaches 0), so hourly
    builds do not switch every list back and forth on noise. A build whose
    evaluation scored nothing serves :data:`~engine.publish.snapshot.UNSCORED`,
    or the first of the ``computed`` algorithms (``algorithms.compute``) when
    it does not compute that one (its gate decision then says it was skipped).
    """
    if configured != AUTO:
        return Served(configured, "configured")
    rows = scores or {}
    scored = [
        (-row[METRIC], ALGORITHMS.index(name), name)
        for name, row in rows.items()
        if name in ALGORITHMS and row.get(METRIC) is not None  # not the session route's row: it serves no list
    ]
    if not scored:
        return Served(UNSCORED if UNSCORED in computed else computed[0], "nothing was scored")
    best = min(scored)[2]
    kept = rows.get(live) if live and live != best else None
    if live and kept and kept.get(METRIC) is not None and kept.get("compared_with") == best:
        low, high = kept.get("mrr_at_20_diff_low"), kept.get("mrr_at_20_diff_high")
        if low is not None and high is not None and high >= 0:
            return Served(
                live,
                f"kept from the live snapshot: {best} scores {rows[best][METRIC] - kept[METRIC]:.4f} more "
                f"{METRIC}, but the 95% interval of the difference ({low:+.4f} to {high:+.4f}) holds 0",
            )
    return Served(best, f"the best {METRIC} on the held-out days")


def served_for(scores: dict[str, dict] | None, config: Config, live: Snapshot | None) -> Served:
    """:func:`served_algorithm` for a build of ``config`` whose evaluation gave ``scores``, ``live`` being live."""
    return served_algorithm(
        scores,
        config.snapshots.gate_algorithm,
        config.algorithms.compute,
        live.served_algorithm if live else None,
    )


def decide(
    scores: dict[str, dict] | None, live: Snapshot | None, algorithm: str, max_drop: float, force: bool
) -> Decision:
    """Compare this build's ``algorithm`` in ``scores`` (from its evaluation) with what the live snapshot serves."""
    score = (scores or {}).get(algorithm, {}).get(METRIC)
    facts: dict[str, Any] = {"algorithm": algorithm, "score": score, "max_drop": max_drop}
    if live is None:
        return Decision(True, "first", "no snapshot is live yet", **facts)
    was = live.served_algorithm
    live_score = (live.manifest.get("evaluation") or {}).get(was, {}).get(METRIC)
    facts |= {"live_build_id": live.build_id, "live_algorithm": was, "live_score": live_score}
    if score is None:
        return Decision(True, "skipped", f"this build has no {algorithm} {METRIC} (nothing was scored)", **facts)
    if live_score is None:
        return Decision(True, "skipped", f"the live snapshot {live.build_id} has no {was} {METRIC}", **facts)
    floor = live_score * (1 - max_drop)
    against = f"the live snapshot's {was} {live_score:.4f}"
    if score >= floor:
        return Decision(True, "passed", f"{algorithm} {METRIC} {score:.4f} against {against}", **facts)
    drop = 1 - score / live_score
    reason = (
        f"{algorithm} {METRIC} {score:.4f} is {drop:.1%} below {against} "
        f"({live.build_id}); the gate allows {max_drop:.1%}"
    )
    if force:
        return Decision(True, "forced", reason + "; published anyway (--force)", **facts)
    return Decision(False, "refused", reason + "; not published (--force publishes anyway)", **facts)
