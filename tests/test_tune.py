"""`etalage tune`: every trial is scored like a build's evaluation and kept in `tuning`."""

from __future__ import annotations

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from engine import config
from engine.pipeline import evaluation, tune
from engine.publish import warehouse
from tests.conftest import copy_built, copy_shop, run_cli
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


def test_the_best_trial_is_set_against_the_configs_own_setting_on_the_same_test_sessions(built_small_shop, tmp_path):
    """The lead is the difference of their MRR@20 for one algorithm, with a paired interval around it."""
    shop = config.load(copy_built(built_small_shop, tmp_path) / "etalage.toml")
    own = msgspec.structs.replace(shop.algorithms, min_support=5)  # worse than 2 on the small shop
    shop = msgspec.structs.replace(shop, algorithms=own)
    grid = {
        "min_support": (2, 5),
        "max_session_items": (own.max_session_items,),
        "top_n": (own.top_n,),
        "look_back_days": (own.look_back_days,),
        "sr_window": (own.sr_window,),
    }
    _, rows, lead = tune.tune(shop, grid)
    best = rows.slice(0, 1).to_pylist()[0]
    assert lead is not None and (lead.best_trial, lead.current_trial, lead.algorithm) == (1, 2, best["algorithm"])
    own_score = next(
        row["mrr_at_20"] for row in rows.to_pylist() if (row["trial"], row["algorithm"]) == (2, lead.algorithm)
    )
    assert lead.paired and lead.difference == pytest.approx(best["mrr_at_20"] - own_score, abs=1e-12)
    assert lead.low < lead.difference < lead.high
    assert "against the config's own setting (trial 2), 95% interval" in lead.describe()

    # The config's own setting as the best, and left out of the grid.
    _, _, itself = tune.tune(shop, {**grid, "min_support": (5,)})
    assert itself is not None and itself.describe() == "the config's own setting (trial 1) is the best"
    _, _, elsewhere = tune.tune(shop, {**grid, "min_support": (2,)})
    assert elsewhere is not None and elsewhere.current_trial is None
    assert elsewhere.describe().startswith("the config's own setting is not among the trials")


def test_trials_with_another_bot_rule_are_not_paired():
    own = config.Algorithms()
    other = msgspec.structs.replace(own, max_session_items=own.max_session_items + 1)
    scored = evaluation.Scored(pa.table({"algorithm": ["llr"], "mrr_at_20": [0.1]}), {"llr": np.ones(3)}, np.ones(3))
    lead = tune._lead(1, "llr", 2, scored, {(): ((), scored)}, [other, own])
    assert not lead.paired and lead.difference is None
    assert "scored other test sessions (another bot rule)" in lead.describe()
    clear = tune.Lead(1, 2, "llr", True, 0.004, 0.001, 0.007)
    assert clear.describe().endswith("+0.0010 to +0.0070: clearly better")
    noise = tune.Lead(1, 2, "llr", True, 0.004, -0.001, 0.009)
    assert noise.describe().endswith("not clearly better: the interval holds 0")
