"""The paired bootstrap over users: is one method's per-interaction figure above
another's, beyond what resampling the users moves it by?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sml.candidates import ELEMENT_BUDGET


@dataclass(frozen=True)
class Interval:
    """A paired difference (mean over interactions) and its bootstrap interval."""

    diff: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    users: np.ndarray,
    *,
    draws: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Mean of a - b over interactions, with a percentile interval from resampling users.

    a, b: (n,) per-interaction values of two methods on the same interactions; users:
    (n,) the user of each. Each draw takes as many users as there are, with
    replacement, and its statistic is the mean of a - b over the drawn users'
    interactions (a user drawn twice counts twice), so interactions of one user move
    together. Same inputs and seed, same interval; NaN when there are no interactions.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    users = np.asarray(users)
    if not a.shape == b.shape == users.shape or a.ndim != 1:
        raise ValueError(f"a, b and users must be (n,) alike: {a.shape}, {b.shape}, {users.shape}")
    if draws < 1 or not 0 < level < 1:
        raise ValueError(f"need draws >= 1 and 0 < level < 1, got {draws}, {level}")
    if len(a) == 0:
        return Interval(math.nan, math.nan, math.nan)
    _, code = np.unique(users, return_inverse=True)  # (n,) dense user code
    sums = np.bincount(code, weights=a - b)  # (U,) each user's summed difference
    counts = np.bincount(code).astype(np.float64)  # (U,) each user's interactions
    n_users = len(sums)
    rng = np.random.default_rng(seed)
    stats = np.empty(draws, dtype=np.float64)
    step = max(1, ELEMENT_BUDGET // n_users)
    for lo in range(0, draws, step):
        picked = rng.integers(0, n_users, size=(min(step, draws - lo), n_users))  # (D, U)
        stats[lo : lo + len(picked)] = sums[picked].sum(axis=1) / counts[picked].sum(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(float(sums.sum() / counts.sum()), float(low), float(high))
