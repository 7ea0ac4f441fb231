"""Adam on the rows a batch touches (``FitConfig.rows_only``) against the dense Adam
it stands in for."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from sml.fit import FitConfig, SeenPairs, fit_mf
from sml.model import MFConfig, MFWeights

N_USERS, N_ITEMS = 40, 90


def _period(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interactions of users 0-29 with items 0-59: users 30-39 and items 60-89 absent."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 30, size=300), rng.integers(0, 60, size=300)


def _fit(start: MFWeights, config: FitConfig) -> MFWeights:
    users, items = _period()
    seen = SeenPairs()
    seen.add(users, items)
    return fit_mf(start, users, items, seen=seen, config=config,
                  rng=np.random.default_rng(7))


def _start() -> MFWeights:
    return MFWeights.init(MFConfig(dim=8), N_USERS, N_ITEMS, torch.Generator().manual_seed(3))


def test_one_step_is_dense_adams_step() -> None:
    """From fresh moments a row no batch touched has no gradient, so dense Adam
    leaves it where it is: one step over the whole period is the same either way."""
    config = FitConfig(epochs=1, lr=0.01, l2=1e-3, n_negatives=2, batch_size=10_000)
    start = _start()
    dense, rows = _fit(start, config), _fit(start, replace(config, rows_only=True))
    torch.testing.assert_close(rows.user, dense.user, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows.item, dense.item, rtol=1e-5, atol=1e-6)
    assert not torch.equal(rows.user, start.user)


def test_untouched_rows_keep_their_values_and_the_period_is_fitted() -> None:
    """Over many small batches: only the rows of the period's users change (every
    item may be drawn as a negative), and the period's pairs end up scored well
    above random ones."""
    config = FitConfig(epochs=8, lr=0.02, l2=1e-4, n_negatives=2, batch_size=64,
                       rows_only=True)
    start = _start()
    fitted = _fit(start, config)
    # users absent from the period keep their rows (dense Adam would move those a
    # batch touched earlier in the fit on their momentum; these no batch touched)
    assert torch.equal(fitted.user[30:], start.user[30:])
    assert (fitted.user[:30] != start.user[:30]).any(dim=1).all()
    users, items = _period()

    def margin(model: MFWeights) -> float:
        """Mean score of the period's pairs minus that of random pairs."""
        rng = np.random.default_rng(1)
        others = rng.integers(0, N_ITEMS, size=users.shape[0])
        u = model.user[torch.from_numpy(users)]
        return float((u * model.item[torch.from_numpy(items)]).sum(1).mean()
                     - (u * model.item[torch.from_numpy(others)]).sum(1).mean())

    assert margin(fitted) > margin(start) + 0.5
