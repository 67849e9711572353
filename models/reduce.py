"""Principal components for the Annoy forest: search in fewer dimensions, then re-rank exactly.

On 1280-d encoder vectors Annoy spends a query's time reading candidates
(5 KB each) and its leaves hold about 1,280 items (a leaf is as big as a
vector), so its trees split the catalogue only a few levels deep. Encoder
features have a low intrinsic dimension (on Fashion-MNIST photos, 64 axes
hold 77% of the variance, 128 hold 85%), so the forest can be built over the
first ``dims`` principal components instead: finer trees, candidates 10-20
times cheaper to compare. The ``candidates`` best in that space are then
re-ranked by the exact metric on the full vectors, so the scores and the order
are exact for whatever the search found.

For the angular metric the vectors are L2-normalised first: the Euclidean
distance between unit vectors orders pairs exactly as their cosine does, and
principal components preserve Euclidean distance as far as they go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE = 50_000
"""At most this many rows fit the components (a random sample; enough for 1280 axes)."""


@dataclass(frozen=True)
class Projection:
    """A mean and ``dims`` orthonormal axes: ``(x - mean) @ axes.T`` is a vector's reduced form."""

    mean: np.ndarray  # (dim,)
    axes: np.ndarray  # (dims, dim)

    @property
    def dims(self) -> int:
        return self.axes.shape[0]

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, dtype=np.float32) - self.mean) @ self.axes.T).astype(np.float32)

    def save(self, path: Path) -> None:
        """One ``.npy`` file: the mean as row 0, the axes below it."""
        np.save(path, np.vstack([self.mean[None, :], self.axes]).astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> Projection:
        rows = np.load(path)
        return cls(mean=rows[0], axes=rows[1:])


def fit(vectors: np.ndarray, dims: int, seed: int = 42) -> Projection:
    """The first ``dims`` principal axes of ``vectors`` (of a seeded sample of at most :data:`SAMPLE` rows).

    Raises:
        ValueError: ``dims`` is not between 1 and the vectors' dimension.
    """
    rows, dim = vectors.shape
    if not 1 <= dims < dim:
        msg = f"dims must be between 1 and {dim - 1} (the vectors have {dim}), not {dims}"
        raise ValueError(msg)
    sample = vectors if rows <= SAMPLE else vectors[np.random.default_rng(seed).choice(rows, SAMPLE, replace=False)]
    mean = sample.astype(np.float64).mean(axis=0)
    centred = (sample - mean).astype(np.float32)
    # The eigenvectors of the dim x dim scatter matrix: one BLAS product and a small eigh, where an SVD of the
    # rows took 15 s for 6,576 x 1280 on this machine.
    _, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
    axes = eigenvectors[:, ::-1][:, :dims].T.copy()
    # An SVD's signs are arbitrary; fix them so the same input always gives the same file.
    axes *= np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    return Projection(mean=mean.astype(np.float32), axes=axes.astype(np.float32))


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (an all-zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
