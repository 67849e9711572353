"""The evaluation as a picture: scores per algorithm for the latest build, and MRR@20 across builds.

Written as a PNG next to the warehouse by ``etalage build --chart`` and the demo
(``<warehouse>.evaluation.png``), or anywhere by ``etalage evaluate --chart``, so a
person can see at a glance whether the last build got better or worse. Hourly
builds leave it out: matplotlib and the drawing cost a second and a half.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt

from engine.publish import warehouse

METRICS = ("mrr", "mrr_at_5", "mrr_at_10", "mrr_at_20", "hit_rate_at_20")


def chart_path(warehouse_path: Path) -> Path:
    """Where the chart of ``warehouse_path`` goes."""
    return warehouse_path.with_name(warehouse_path.name + ".evaluation.png")


def write(warehouse_path: Path, target: Path | None = None) -> Path:
    """Draw the warehouse's ``evaluation`` table; return the PNG's path."""
    target = target or chart_path(warehouse_path)
    with warehouse.connect(warehouse_path, read_only=True) as connection:
        latest = connection.execute(
            f"SELECT algorithm, {', '.join(METRICS)} FROM evaluation "
            "WHERE evaluated_at = (SELECT max(evaluated_at) FROM evaluation) ORDER BY algorithm"
        ).fetchall()
        history = connection.execute(
            # Rows from before evaluated_at existed are labelled by their build.
            "SELECT coalesce(strftime(evaluated_at, '%Y-%m-%d %H:%M'), build_id), algorithm, mrr_at_20 FROM evaluation "
            "ORDER BY evaluated_at NULLS FIRST, build_id, algorithm"
        ).fetchall()
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    width = 0.8 / max(1, len(latest))
    for i, (algorithm, *values) in enumerate(latest):
        bars.bar([m + i * width for m in range(len(METRICS))], values, width, label=algorithm)
    bars.set_xticks([m + width * (len(latest) - 1) / 2 for m in range(len(METRICS))], METRICS)
    bars.set_title("latest evaluation: score per algorithm")
    bars.legend()
    builds = list(dict.fromkeys(build for build, _, _ in history))
    for algorithm in sorted({a for _, a, _ in history}):
        points = [(builds.index(b), v) for b, a, v in history if a == algorithm]
        lines.plot([x for x, _ in points], [y for _, y in points], marker="o", label=algorithm)
    lines.set_xticks(range(len(builds)), builds, rotation=30, ha="right", fontsize=7)
    lines.set_title("MRR@20 across evaluations")
    lines.legend()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
