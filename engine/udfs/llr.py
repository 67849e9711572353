"""Dunning's log-likelihood ratio, exactly as Apache Mahout computes it.

Mahout's ``LogLikelihood.logLikelihoodRatio`` is the reference the talk's team
used on Spark; etalage reproduces its arithmetic step for step (the ``xLogX``
entropy form, subtractions in the same order, negative round-off clamped to zero) so
that scores can be compared with a Mahout or Spark run number for number.

The same compiled function serves three callers: the co-occurrence kernel,
the ``llr`` scalar function registered in DuckDB, and the tests.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def x_log_x(x: int) -> float:
    """``x * ln(x)`` with ``0 * ln(0) = 0``, Mahout's ``LogLikelihood.xLogX``."""
    return 0.0 if x == 0 else x * math.log(x)


@numba.njit(cache=True, nogil=True)
def _entropy2(a: int, b: int) -> float:
    return x_log_x(a + b) - x_log_x(a) - x_log_x(b)


@numba.njit(cache=True, nogil=True)
def _entropy4(a: int, b: int, c: int, d: int) -> float:
    return x_log_x(a + b + c + d) - x_log_x(a) - x_log_x(b) - x_log_x(c) - x_log_x(d)


@numba.njit(cache=True, nogil=True)
def llr(k11: int, k12: int, k21: int, k22: int) -> float:
    """Log-likelihood ratio of a 2x2 contingency table.

    Args:
        k11: sessions with both items.
        k12: sessions with the second item but not the first.
        k21: sessions with the first item but not the second.
        k22: sessions with neither.

    Returns:
        ``2 * (H(rows) + H(columns) - H(matrix))``, or 0.0 where floating-point
        round-off would make it negative.
    """
    return from_entropies(
        _entropy2(k11 + k12, k21 + k22), _entropy2(k11 + k21, k12 + k22), _entropy4(k11, k12, k21, k22)
    )


@numba.njit(cache=True, nogil=True)
def from_entropies(row_entropy: float, column_entropy: float, matrix_entropy: float) -> float:
    """The last step of :func:`llr`, for callers that look the entropies' ``xLogX`` terms up in a table.

    ``x_log_x`` of an integer is the same double whether computed or looked
    up, so the co-occurrence kernel, which tabulates it, gets bit-identical scores.
    """
    if row_entropy + column_entropy < matrix_entropy:
        return 0.0  # round-off error
    return 2.0 * (row_entropy + column_entropy - matrix_entropy)


@numba.njit(cache=True, nogil=True)
def x_log_x_table(largest: int) -> np.ndarray:
    """``x_log_x(x)`` for x = 0..largest."""
    table = np.empty(largest + 1, dtype=np.float64)
    for x in range(largest + 1):
        table[x] = x_log_x(x)
    return table


@numba.njit(cache=True, nogil=True)
def llr_array(k11: np.ndarray, k12: np.ndarray, k21: np.ndarray, k22: np.ndarray) -> np.ndarray:
    """:func:`llr` over equal-length int64 arrays (DuckDB hands UDFs whole vectors)."""
    out = np.empty(k11.shape[0], dtype=np.float64)
    for i in range(k11.shape[0]):
        out[i] = llr(k11[i], k12[i], k21[i], k22[i])
    return out
