"""The per-build evaluation: the talk's MRR and next-item MRR@k / hit rate@k, computed by hand."""

from __future__ import annotations

import datetime as dt

import numba
import numpy as np
import pyarrow as pa
import pytest

from engine import build, config
from engine.pipeline import evaluation
from engine.publish import warehouse
from engine.udfs import resample
from tests.conftest import divolte_events, shop_config, write_shop_folder
from tests.test_engine_by_hand import ITEMS, SESSIONS

TEST_DAY = dt.datetime(2026, 11, 10, 12, 0)
# Test sessions (after the cut-off of 2026-11-05), as sequences of views:
TEST_SESSIONS = {
    "t1": "AB",  # A's cooccurrence list is B, C, D: B at rank 1
    "t2": "CBA",  # C's list is A, B (tied at 2, B second by id): rank 2; then B -> A: rank 1
    "t3": "DC",
    "t4": "DC",
    "t5": "DC",  # D's list is A, B: C absent, although D and C go together from now on
    "t6": "A",  # one product: no transition, not a session of the talk's MRR
    "t7": "EA",  # E is in the catalogue but was never viewed before the cut-off: no list, 0
    "t8": "AAB",  # a repeated view is not a transition: A -> B, rank 1
}


def evaluation_events():
    train = [{"session": s, "product": ITEMS[x]} for s, products in SESSIONS.items() if s != "s7" for x in products]
    test = [
        {"session": s, "product": ITEMS[x], "ts": TEST_DAY + dt.timedelta(minutes=i, seconds=j)}
        for i, (s, products) in enumerate(TEST_SESSIONS.items())
        for j, x in enumerate(products)
    ]
    return pa.concat_tables([divolte_events(train), divolte_events(test)])


@pytest.fixture(scope="module", params=["kernel", "sql"])
def evaluated(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"evaluation-{request.param}")
    path = write_shop_folder(folder, evaluation_events(), {"nl": list(ITEMS.values())}, "min_support = 1")
    with path.open("a") as toml:
        toml.write('\n[evaluation]\ncutoff = "2026-11-05"\n')
    build.build(config.load(path), pairs=request.param)
    with warehouse.connect(folder / "warehouse.duckdb", read_only=True) as connection:
        rows = connection.execute("SELECT * FROM evaluation").fetchall()
        names = [d[0] for d in connection.description]
        full = connection.execute(
            "SELECT rank FROM itemitem WHERE algorithm = 'cooccurrence' AND product_id = $d AND related_product_id = $c",
            {"d": ITEMS["D"], "c": ITEMS["C"]},
        ).fetchall()
        leftovers = connection.execute(
            "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'holdout'"
        ).fetchone()[0]
    return {row[names.index("algorithm")]: dict(zip(names, row, strict=True)) for row in rows}, full, leftovers


def test_cooccurrence_scores(evaluated):
    scores = evaluated[0]["cooccurrence"]
    # The talk's MRR over the 7 sessions with two or more products: t1 1, t2 1/2, t3-t5 0, t7 0, t8 1.
    assert scores["sessions"] == 7
    assert scores["mrr"] == pytest.approx(2.5 / 7)
    # Next-item over 8 transitions: A>B 1, C>B 1/2, B>A 1, D>C 0 (x3), E>A 0, A>B 1.
    assert scores["pairs"] == 8
    for k in (5, 10, 20):
        assert scores[f"mrr_at_{k}"] == pytest.approx(3.5 / 8)
        assert scores[f"hit_rate_at_{k}"] == pytest.approx(4 / 8)
    # Lists recommend A, B, C and D: 4 of the 5 catalogue products.
    assert scores["coverage"] == pytest.approx(4 / 5)


def test_popular_scores(evaluated):
    scores = evaluated[0]["popular"]
    # Popularity before the cut-off: A 4, B 4, C 3, D 2. A>B 1, C>B 1/2, B>A 1, D>C 1/3 (x3), E>A 0, A>B 1.
    assert scores["mrr"] == pytest.approx((1 + 0.5 + 3 / 3 + 0 + 1) / 7)
    assert scores["mrr_at_5"] == pytest.approx((1 + 0.5 + 1 + 3 / 3 + 0 + 1) / 8)
    assert scores["hit_rate_at_5"] == pytest.approx(7 / 8)


def test_the_test_period_never_reaches_the_evaluated_lists(evaluated):
    scores, full, leftovers = evaluated
    # The published itemitem, built from every event, does pair D with C (three test sessions)...
    assert full == [(1,)]
    # ...but the evaluated lists were computed before the cut-off: every D -> C transition scores 0.
    assert scores["cooccurrence"]["hit_rate_at_20"] == pytest.approx(4 / 8)
    assert scores["llr"]["hit_rate_at_20"] == pytest.approx(4 / 8)
    assert leftovers == 0


def test_evaluation_rows_carry_build_and_parameters(evaluated):
    row = evaluated[0]["llr"]
    assert row["cutoff"] == dt.datetime(2026, 11, 5)
    assert row["build_id"]
    assert '"min_support": 1' in str(row["parameters"])


def test_on_the_example_shop_llr_and_jaccard_beat_popularity(small_shop, tmp_path):
    cfg = shop_config(small_shop, tmp_path, evaluation=config.Evaluation(test_days=2))
    build.build(cfg)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        mrr = dict(connection.execute("SELECT algorithm, mrr_at_20 FROM evaluation").fetchall())
    # Measured on this shop (seed 11, 30k events, last 2 days held out): llr 1.83x, jaccard 1.62x popular.
    assert mrr["llr"] > 1.5 * mrr["popular"]
    assert mrr["jaccard"] > 1.3 * mrr["popular"]


def test_history_from_an_older_warehouse_gains_new_columns(tmp_path):
    path = write_shop_folder(tmp_path, evaluation_events(), {"nl": list(ITEMS.values())}, "min_support = 1")
    with path.open("a") as toml:
        toml.write('\n[evaluation]\ncutoff = "2026-11-05"\n')
    build.build(config.load(path))
    live = tmp_path / "warehouse.duckdb"
    with warehouse.connect(live) as connection:  # as an older etalage left it
        connection.execute("ALTER TABLE evaluation DROP COLUMN evaluated_at")
    build.build(config.load(path))
    with warehouse.connect(live, read_only=True) as connection:
        rows = connection.execute("SELECT count(*), count(evaluated_at) FROM evaluation").fetchone()
    assert rows == (2 * len(evaluation.SCORED), len(evaluation.SCORED))


def test_both_paths_score_alike_with_the_same_intervals(tmp_path):
    """The SQL path's rows (``sql/evaluation.sql``, resampled from ``sql/transition_ranks.sql``) are the kernel's."""
    scores = {}
    for pairs in ("kernel", "sql"):
        path = write_shop_folder(tmp_path / pairs, evaluation_events(), {"nl": list(ITEMS.values())}, "min_support = 1")
        with path.open("a") as toml:
            toml.write('\n[evaluation]\ncutoff = "2026-11-05"\n')
        build.build(config.load(path), pairs=pairs)
        with warehouse.connect(path.parent / "warehouse.duckdb", read_only=True) as connection:
            rows = connection.table("evaluation").to_arrow_table().to_pylist()
        scores[pairs] = {row["algorithm"]: row for row in rows}
    kernel, sql = scores["kernel"], scores["sql"]
    assert set(kernel) == set(sql) == set(evaluation.SCORED)
    for algorithm, row in kernel.items():
        for column in ("sessions", "pairs", "compared_with"):
            assert sql[algorithm][column] == row[column], (algorithm, column)
        for column in evaluation.COLUMNS[4:] + list(evaluation.INTERVALS[1:]):
            assert sql[algorithm][column] == pytest.approx(row[column], rel=1e-12, abs=1e-15), (algorithm, column)


def test_the_served_algorithm_is_compared_with_itself_and_the_interval_holds_the_difference(evaluated):
    scores, _, _ = evaluated
    served = {row["compared_with"] for row in scores.values()}
    assert len(served) == 1
    best = max(row["mrr_at_20"] for name, row in scores.items() if name in config.ALGORITHMS)
    (name,) = served
    assert scores[name]["mrr_at_20"] == best
    assert (
        scores[name]["mrr_at_20_diff"] == scores[name]["mrr_at_20_diff_low"] == scores[name]["mrr_at_20_diff_high"] == 0
    )
    for row in scores.values():
        assert row["mrr_at_20_diff"] == pytest.approx(row["mrr_at_20"] - best)
        assert row["mrr_at_20_diff_low"] <= row["mrr_at_20_diff"] <= row["mrr_at_20_diff_high"]


def test_the_bootstrap_resamples_sessions_in_pairs():
    """Two algorithms on 200 sessions of 1 to 3 transitions: a sure gain has a point interval, a coin flip a wide one."""
    rng = np.random.default_rng(0)
    session = np.repeat(np.arange(200), rng.integers(1, 4, size=200))
    ranks = {
        "llr": np.where(rng.random(session.size) < 0.5, 1, 0),
        "popular": np.zeros(session.size, np.int64),
        "transitions": np.ones(session.size, np.int64),
    }
    ranks["cooccurrence"] = ranks["llr"].copy()
    rows = pa.table({"algorithm": list(ranks), "mrr_at_20": [float(_mrr(r)) for r in ranks.values()]})
    scored = evaluation.with_intervals(rows, ranks, session, "llr")
    by_name = {row["algorithm"]: row for row in scored.to_pylist()}
    assert {row["compared_with"] for row in by_name.values()} == {"llr"}
    # The same ranks as the served list: every resample differs by exactly 0 (paired, not two independent draws).
    assert by_name["cooccurrence"]["mrr_at_20_diff_low"] == by_name["cooccurrence"]["mrr_at_20_diff_high"] == 0
    sure = by_name["transitions"]
    assert sure["mrr_at_20_diff_low"] < sure["mrr_at_20_diff"] < sure["mrr_at_20_diff_high"]  # 1 - a coin's mean
    assert sure["mrr_at_20_diff_low"] > 0.4 and sure["mrr_at_20_diff_high"] < 0.6
    assert evaluation.with_intervals(rows, ranks, session, "llr").equals(scored)  # seeded
    auto = evaluation.with_intervals(rows, ranks, session, "auto").to_pylist()
    assert {row["compared_with"] for row in auto} == {"transitions"}


def test_resamples_draw_sessions_with_replacement(monkeypatch):
    """Blocked resampling is drawing n of n sessions with replacement: counts of mean 1 and variance 1 - 1/n.

    Rows of the identity make each resample's sums its counts; blocks of 16
    sessions put the 50 sessions in four blocks, one of them short.
    """
    monkeypatch.setattr(resample, "BLOCK", 16)
    n, resamples = 50, 4000
    counts = resample.resampled_sums(np.eye(n), resamples, seed=3)
    assert counts.shape == (resamples, n)
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    assert np.all(counts.sum(axis=1) == n)  # every resample takes exactly n sessions
    assert abs(counts.mean() - 1) < 0.01  # counts.mean() is exactly 1; each session's mean:
    assert np.all(np.abs(counts.mean(axis=0) - 1) < 0.1)
    assert abs(counts.var(axis=0).mean() - (1 - 1 / n)) < 0.05
    assert not np.array_equal(counts[0], counts[1])


def test_resamples_do_not_depend_on_the_threads():
    """Each (resample, block) has its own seeded stream: the sums are the same on one core as on several."""
    rows = np.random.default_rng(5).random((10_000, 3))
    numba.set_num_threads(1)
    try:
        alone = resample.resampled_sums(rows, 64, seed=17)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(resample.resampled_sums(rows, 64, seed=17), alone)
    assert not np.array_equal(resample.resampled_sums(rows, 64, seed=18), alone)


def _mrr(rank: np.ndarray) -> float:
    return float(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).mean())


def test_the_bot_rules_drop_the_same_sessions_from_training_and_test(tmp_path):
    """A fast clicker (40 views in a minute) is a bot on both sides of the cut-off; a long, slow visit is not."""
    products = [f"20{i:05d}" for i in range(60)]
    start, later = dt.datetime(2026, 11, 1, 12), TEST_DAY

    def visit(session: str, viewed: list[str], first: dt.datetime, step: dt.timedelta) -> list[dict]:
        return [{"session": session, "product": p, "ts": first + i * step} for i, p in enumerate(viewed)]

    second, minute = dt.timedelta(seconds=1), dt.timedelta(minutes=1)
    rows = (
        visit("long", products, start, minute)  # 60 products in an hour: a person browsing
        + visit("fast", [products[i % 2] for i in range(40)], start + 2 * minute, second)  # 40 views in 40 s
        + visit("n1", products[:2], start, minute)
        + visit("n2", products[1:3], start, minute)
        + visit("t1", products[:2], later, minute)
        + visit("t-fast", [products[2 * (i % 2)] for i in range(40)], later, second)
        + visit("t-long", products[3:13], later, minute)
    )
    path = write_shop_folder(tmp_path, divolte_events(rows), {"nl": products}, "min_support = 1")
    with path.open("a") as toml:
        toml.write('\n[evaluation]\ncutoff = "2026-11-05"\n')
    cfg = config.load(path)
    assert (cfg.algorithms.max_session_items, cfg.algorithms.max_views_per_minute) == (200, 30)
    build.build(cfg)
    with warehouse.connect(cfg.warehouse, read_only=True) as connection:
        sessions = dict(connection.execute("SELECT product_id, sessions FROM item_counts").fetchall())
        scored = connection.execute("SELECT DISTINCT sessions, pairs FROM evaluation").fetchall()
    assert sessions[products[0]] == 2 + 1  # long, n1 and t1 (the published lists count the test days too)
    assert scored == [(2, 1 + 9)]  # t1 and t-long; t-fast is not a test session


def test_a_visual_served_algorithm_gives_the_visit_its_look_alike_lists():
    """The visit kernel's lists for ``visual_blend``: the look-alike rows joined to the item numbers, ranks kept."""
    from engine.udfs import cooccurrence

    items = cooccurrence.Items(
        tenant=pa.array(["nl", "nl", "nl", "be"]),
        product_id=pa.array(["a", "b", "c", "a"]),
        sessions=np.array([3, 2, 1, 4]),
        tenant_sessions=np.array([5, 5, 5, 4]),
    )
    shape = (len(cooccurrence.ALGORITHMS) - 1, len(items), 2)  # no click lists: only their length matters here
    lists = cooccurrence.Lists(
        related=np.full(shape, -1, np.int32),
        cooccurrence=np.zeros(shape, np.int32),
        score=np.zeros(shape),
        length=np.zeros(shape[:2], np.int32),
        by_order=np.array([3, 0, 1, 2]),
        tenants=[(0, 1), (1, 4)],
        leaders=np.full((2, 3), -1, np.int32),
    )
    looks = pa.table(
        {
            "tenant": pa.array(["nl", "nl", "nl", "be", "nl"]).dictionary_encode(),
            "algorithm": ["visual_blend", "visual_blend", "visual_blend", "visual_blend", "visual"],
            "product_id": ["a", "a", "b", "a", "c"],
            "related_product_id": ["c", "b", "a", "a", "a"],
            "rank": pa.array([1, 2, 1, 3, 1], pa.int32()),
        }
    )
    related = evaluation._served_lists(items, lists, "visual_blend", looks)
    assert related.tolist() == [[2, 1], [0, -1], [-1, -1], [-1, -1]]  # be's rank 3 is past top_n
