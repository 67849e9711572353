"""`etalage tune`: every trial is scored like a build's evaluation and kept in `tuning`."""

from __future__ import annotations

import pytest

from engine.pipeline import evaluation
from engine.publish import warehouse
from tests.conftest import copy_shop, run_cli
from tests.test_docs import documented_tables


@pytest.mark.slow
def test_tune_records_every_trial_and_keeps_the_rest(small_shop, tmp_path):
    config = copy_shop(small_shop, tmp_path)
    config.write_text(config.read_text().replace("test_days = 7", "test_days = 2"))
    assert run_cli("build", "--config", str(config)).returncode == 0
    live = tmp_path / "warehouse.duckdb"
    with warehouse.connect(live, read_only=True) as connection:
        before = connection.execute("SELECT count(*) FROM itemitem").fetchone()[0]

    result = run_cli(
        "tune",
        "--config",
        str(config),
        "--min-support",
        "1,2",
        "--max-session-items",
        "50",
        "--top-n",
        "20",
        "--look-back-days",
        "0",
        "--sr-window",
        "5",
    )
    assert result.returncode == 0, result.stderr
    assert "best by MRR@20" in result.stdout

    with warehouse.connect(live, read_only=True) as connection:
        columns = [(c[0], c[1]) for c in connection.execute("DESCRIBE tuning").fetchall()]
        trials = connection.execute(
            "SELECT trial, min_support, count(*) FROM tuning GROUP BY ALL ORDER BY 1"
        ).fetchall()
        best = connection.execute("SELECT min_support FROM tuning ORDER BY mrr_at_20 DESC LIMIT 1").fetchone()[0]
        assert connection.execute("SELECT count(*) FROM itemitem").fetchone()[0] == before
    assert columns == documented_tables()["tuning"]
    algorithms = len(evaluation.SCORED)
    assert trials == [(1, 1, algorithms), (2, 2, algorithms)]  # two settings, every algorithm each
    assert f"min_support={best}" in result.stdout

    # A later build keeps the tuning history.
    assert run_cli("build", "--config", str(config)).returncode == 0
    with warehouse.connect(live, read_only=True) as connection:
        assert connection.execute("SELECT count(*) FROM tuning").fetchone()[0] == 2 * algorithms


def test_tune_refuses_a_bad_grid(small_shop):
    result = run_cli("tune", "--config", str(small_shop / "etalage.toml"), "--min-support", "one")
    assert result.returncode == 2
    assert "not a comma-separated list of integers" in result.stderr
    result = run_cli("tune", "--config", str(small_shop / "etalage.toml"), "--sr-window", "11")
    assert result.returncode == 2
    assert "sr_window must be from 1 to 10" in result.stderr
