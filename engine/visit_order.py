"""How a visit's blended list is ordered: one rule for the session route, the evaluation's kernel and its SQL.

A blend score is a sum of 1 / (age x rank) terms, and the same terms added in
another order (a dictionary, a parallel SQL aggregate) can differ in the last
bit. Scores are therefore compared as integers at :data:`KEY_SCALE`
(``sql/visit_lists.sql`` writes ``floor(score * 1e9 + 0.5)``), higher first,
ties going to the lower product id.
"""

import math

KEY_SCALE = 1e9
"""The resolution at which blend scores are compared."""


def blend_key(score: float) -> int:
    """The integer a blend score is ordered by, higher first: ``floor(score * KEY_SCALE + 0.5)``."""
    return math.floor(score * KEY_SCALE + 0.5)
