"""The evaluation's bootstrap compiled: sums over resamples of the test sessions drawn with replacement.

A resample draws ``n`` of the ``n`` sessions with replacement and sums their
rows. Drawn one session at a time over all of them, every draw reads a row
from anywhere in the table, which is far larger than the CPU cache at a few
hundred thousand sessions. So the sessions are cut into blocks that fit the
cache: a resample first draws how many of its ``n`` draws fall in each block
(a multinomial over the blocks' sizes, which is how draws with replacement
spread), then, block by block, which sessions of the block they take. The
resamples are draws with replacement (a session is picked from 32 random
bits by a multiply and a shift, so its chance is 1/size within one part in
a million); only the order of the random numbers differs from drawing them
one by one. Every (resample, block) has a
random stream of its own, seeded from ``seed``, so the sums are the same
whichever core computes them and however many there are; and each column is
summed in row order, so its sums do not depend on the other columns (an
algorithm's interval is the same in a build of fewer algorithms).
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 1 << 12
"""Sessions per block: a block's rows (a dozen doubles each) stay in a core's cache while all resamples draw from it."""


def resampled_sums(rows: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, columns): each resample's column sums of ``rows`` (sessions, columns), sessions drawn with replacement."""
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    n = rows.shape[0]
    if n == 0:
        return np.zeros((resamples, rows.shape[1]))
    sizes = np.minimum(BLOCK, n - np.arange(0, n, BLOCK))
    generator = np.random.default_rng(seed)
    drawn_in = generator.multinomial(n, sizes / n, size=resamples)  # how many draws fall in each block
    streams = generator.integers(0, np.iinfo(np.int64).max, size=resamples, dtype=np.int64).astype(np.uint64)
    return _sums(rows, BLOCK, drawn_in, streams)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BLOCK_STEP = np.uint64(0xD1B54A32D192ED03)


@numba.njit(cache=True, inline="always")
def _next(state):
    """SplitMix64: the next state and 64 random bits."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@numba.njit(cache=True, parallel=True)
def _sums(rows, block, drawn_in, streams):
    """The sums of each resample (``drawn_in``: its draws per block), block by block; ``streams`` seed the draws."""
    n, columns = rows.shape
    resamples, n_blocks = drawn_in.shape
    sums = np.zeros((resamples, columns))
    for b in range(n_blocks):  # one block at a time, every resample drawing from it
        first = b * block
        size = min(block, n - first)
        held = rows[first : first + size]
        for resample in numba.prange(resamples):
            _, state = _next(streams[resample] + np.uint64(b) * _BLOCK_STEP)  # this (resample, block)'s own start
            taken = np.zeros(size)  # how often this resample takes each of the block's sessions
            for _ in range(drawn_in[resample, b]):
                state, bits = _next(state)
                taken[np.int64(((bits >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32))] += 1.0
            total = sums[resample]
            for row in range(size):  # in row order for every column: a column's sums never depend on the others
                for column in range(columns):
                    total[column] += taken[row] * held[row, column]
    return sums
