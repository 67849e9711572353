"""Dunning's LLR against Mahout's own test vectors, an independent G-test, and through DuckDB."""

from __future__ import annotations

import math

import pytest
from scipy.stats import chi2_contingency

from engine.publish import warehouse
from engine.udfs.llr import llr

# (k11, k12, k21, k22), expected, tolerance: Mahout's LogLikelihoodTest; the first two are 4 ln 2 and 40 ln 2.
MAHOUT_VECTORS = [
    ((1, 0, 0, 1), 2.772588722239781, 1e-6),
    ((10, 0, 0, 10), 27.72588722239781, 1e-5),
    ((5, 1995, 0, 100000), 39.33052, 1e-5),
    ((1000, 1995, 1000, 100000), 4730.737, 1e-3),
    ((1000, 1000, 1000, 100000), 5734.343, 1e-3),
    ((1000, 1000, 1000, 99000), 5714.932, 1e-3),
]
SHIRT_JEANS = (12, 73, 51, 5334)
"""The talk's table: jeans and shirt together 12 times, jeans without shirt 73, shirt without jeans 51."""


def g_statistic(k11: int, k12: int, k21: int, k22: int) -> float:
    """2 * sum(O ln(O / E)), the textbook G-test, written independently of Mahout's entropy form."""
    table = [[k11, k12], [k21, k22]]
    n = k11 + k12 + k21 + k22
    rows = [k11 + k12, k21 + k22]
    columns = [k11 + k21, k12 + k22]
    return 2.0 * sum(
        table[i][j] * math.log(table[i][j] * n / (rows[i] * columns[j]))
        for i in range(2)
        for j in range(2)
        if table[i][j]
    )


@pytest.mark.parametrize(("counts", "expected", "tolerance"), MAHOUT_VECTORS)
def test_mahout_vectors(counts, expected, tolerance):
    assert llr(*counts) == pytest.approx(expected, abs=tolerance)


def test_exact_cases_are_within_a_few_ulp():
    # Mahout's arithmetic loses a few ulp to cancellation; it must not lose more.
    assert llr(1, 0, 0, 1) == pytest.approx(4 * math.log(2), rel=4e-16)
    assert llr(10, 0, 0, 10) == pytest.approx(40 * math.log(2), rel=4e-15)


def test_talks_shirt_and_jeans_table():
    value = llr(*SHIRT_JEANS)
    assert value == pytest.approx(g_statistic(*SHIRT_JEANS), rel=1e-12)
    scipy_g, *_ = chi2_contingency([[12, 73], [51, 5334]], correction=False, lambda_="log-likelihood")
    assert value == pytest.approx(scipy_g, rel=1e-12)
    assert value == pytest.approx(41.727774583792, rel=1e-12)


@pytest.mark.parametrize("counts", [(3, 1, 1, 1), (1, 5, 7, 300), (40, 2, 3, 10_000), (0, 10, 10, 100)])
def test_agrees_with_g_test(counts):
    assert llr(*counts) == pytest.approx(g_statistic(*counts), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("counts", [(1, 1, 1, 1), (1, 3, 3, 9), (1, 7, 7, 49)])
def test_negative_round_off_is_clamped_to_zero(counts):
    # Independent tables, whose entropy difference rounds to a tiny negative number.
    assert llr(*counts) == 0.0


def test_duckdb_udf_matches_the_compiled_function():
    connection = warehouse.connect()
    cases = [counts for counts, _, _ in MAHOUT_VECTORS] + [SHIRT_JEANS, (1, 1, 1, 1)]
    for counts in cases:
        assert connection.execute("SELECT llr(?, ?, ?, ?)", list(counts)).fetchone()[0] == llr(*counts)
    assert connection.execute("SELECT llr(NULL, 1, 1, 1)").fetchone()[0] is None
    total = connection.execute("SELECT sum(llr(i, 5, 7, 1000)) FROM range(2000) AS t(i)").fetchone()[0]
    assert total == pytest.approx(sum(llr(i, 5, 7, 1000) for i in range(2000)))
