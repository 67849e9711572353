"""A/B assignment exactly as PlanOut computes it, so assignments can be checked against PlanOut itself.

PlanOut hashes ``"{experiment_salt}.{parameter_salt}.{unit}"`` with SHA-1 and
keeps the first 15 hex digits. ``UniformChoice`` takes that number modulo the
number of choices; ``WeightedChoice`` and ``BernoulliTrial`` scale it to
[0, 1] by dividing by ``0xFFFFFFFFFFFFFFF``. The same visitor therefore gets
the same variant in every process, on every machine, for as long as the
experiment's salt, its parameter name and its variants stay the same; other
experiments and other config keys do not enter the hash.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence
from typing import TypeVar

from engine.config import Experiment, Variant

T = TypeVar("T")

LONG_SCALE = float(0xFFFFFFFFFFFFFFF)
VARIANT_PARAMETER = "variant"
"""The PlanOut parameter name (its salt) under which the gateway draws a visitor's variant."""


def planout_hash(experiment_salt: str, parameter_salt: str, unit: object) -> int:
    """PlanOut's ``getHash``: an integer from the first 15 hex digits of the salted SHA-1."""
    text = f"{experiment_salt}.{parameter_salt}.{unit}"
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16)


def uniform(experiment_salt: str, parameter_salt: str, unit: object) -> float:
    """PlanOut's ``getUniform(0, 1)``."""
    return planout_hash(experiment_salt, parameter_salt, unit) / LONG_SCALE


def uniform_choice(choices: Sequence[T], experiment_salt: str, parameter_salt: str, unit: object) -> T:
    """PlanOut's ``UniformChoice``."""
    return choices[planout_hash(experiment_salt, parameter_salt, unit) % len(choices)]


def weighted_choice(
    choices: Sequence[T], weights: Sequence[float], experiment_salt: str, parameter_salt: str, unit: object
) -> T:
    """PlanOut's ``WeightedChoice``: the first choice whose cumulative weight reaches a uniform draw."""
    cumulative = list(itertools.accumulate(weights))
    stop = cumulative[-1] * uniform(experiment_salt, parameter_salt, unit)
    for choice, bound in zip(choices, cumulative, strict=True):
        if stop <= bound:
            return choice
    return choices[-1]  # unreachable: stop <= total


def bernoulli_trial(p: float, experiment_salt: str, parameter_salt: str, unit: object) -> int:
    """PlanOut's ``BernoulliTrial``: 1 with probability ``p``."""
    return 1 if uniform(experiment_salt, parameter_salt, unit) <= p else 0


def assign(experiment: Experiment, visitor: str) -> Variant:
    """The visitor's variant of ``experiment``: a PlanOut ``WeightedChoice`` over the variants' weights.

    The same arithmetic as :func:`weighted_choice`; the gateway keeps an
    :class:`Assigner`, which does the visitor-independent part once.
    """
    return Assigner(experiment)(visitor)


class Assigner:
    """:func:`assign` for one experiment, with what does not depend on the visitor done once."""

    def __init__(self, experiment: Experiment) -> None:
        self.variants = experiment.variants
        self.cumulative = list(itertools.accumulate(v.weight for v in experiment.variants))
        self.prefix = hashlib.sha1(f"{experiment.experiment_salt}.{VARIANT_PARAMETER}.".encode())
        """The SHA-1 state after the salts, copied for each visitor."""

    def __call__(self, visitor: str) -> Variant:
        digest = self.prefix.copy()
        digest.update(visitor.encode("utf-8"))
        # The first 15 hex digits of the SHA-1 are the first 60 bits of its bytes.
        draw = (int.from_bytes(digest.digest()[:8], "big") >> 4) / LONG_SCALE
        # The first variant whose cumulative weight reaches the draw (the last one when rounding overshoots).
        chosen = bisect.bisect_left(self.cumulative, self.cumulative[-1] * draw)
        return self.variants[min(chosen, len(self.variants) - 1)]
