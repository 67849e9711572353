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

from engine.config import ALGORITHMS, AUTO, CLICK_ALGORITHMS
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


def served_algorithm(
    scores: dict[str, dict] | None, configured: str, computed: Sequence[str] = CLICK_ALGORITHMS
) -> str:
    """The algorithm a build serves: ``configured``, or for ``auto`` the best by :data:`METRIC` in ``scores``.

    Ties go to the algorithm named first in ``engine.config.ALGORITHMS``, so
    every build of the same data serves the same one; a build whose
    evaluation scored nothing serves :data:`~engine.publish.snapshot.UNSCORED`,
    or the first of the ``computed`` algorithms (``algorithms.compute``) when
    it does not compute that one (its gate decision then says it was skipped).
    """
    if configured != AUTO:
        return configured
    scored = [
        (-row[METRIC], ALGORITHMS.index(name), name)
        for name, row in (scores or {}).items()
        if name in ALGORITHMS and row.get(METRIC) is not None  # not the session route's row: it serves no list
    ]
    if scored:
        return min(scored)[2]
    return UNSCORED if UNSCORED in computed else computed[0]


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
