"""The evaluation gate: a build that scores clearly worse than the live snapshot is not published.

Cron rebuilds every hour; a broken upstream (a tracking change that loses
half the product views, a bad config push) should not silently replace good
recommendations with bad ones. The gate compares the new build's MRR@20 for
the algorithm the shop serves with the live snapshot's, as recorded in its
manifest, and refuses a drop of more than ``max_mrr_drop`` (a fraction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.publish.snapshot import Snapshot

METRIC = "mrr_at_20"


@dataclass(frozen=True)
class Decision:
    """Whether to publish, and why, in words a cron log can show."""

    publish: bool
    verdict: str  # first | passed | refused | forced | skipped
    reason: str
    algorithm: str
    score: float | None = None
    live_build_id: str | None = None
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


def decide(
    scores: dict[str, dict] | None, live: Snapshot | None, algorithm: str, max_drop: float, force: bool
) -> Decision:
    """Compare ``scores`` (per algorithm, from this build's evaluation) with the live snapshot's."""
    score = (scores or {}).get(algorithm, {}).get(METRIC)
    facts = {"algorithm": algorithm, "score": score, "max_drop": max_drop}
    if live is None:
        return Decision(True, "first", "no snapshot is live yet", **facts)
    live_score = (live.manifest.get("evaluation") or {}).get(algorithm, {}).get(METRIC)
    facts |= {"live_build_id": live.build_id, "live_score": live_score}
    if score is None:
        return Decision(True, "skipped", f"this build has no {algorithm} {METRIC} (evaluation is off)", **facts)
    if live_score is None:
        return Decision(True, "skipped", f"the live snapshot {live.build_id} has no {algorithm} {METRIC}", **facts)
    floor = live_score * (1 - max_drop)
    if score >= floor:
        return Decision(True, "passed", f"{algorithm} {METRIC} {score:.4f} against the live {live_score:.4f}", **facts)
    drop = 1 - score / live_score
    reason = (
        f"{algorithm} {METRIC} {score:.4f} is {drop:.1%} below the live snapshot's {live_score:.4f} "
        f"({live.build_id}); the gate allows {max_drop:.1%}"
    )
    if force:
        return Decision(True, "forced", reason + "; published anyway (--force)", **facts)
    return Decision(False, "refused", reason + "; not published (--force publishes anyway)", **facts)
