"""The seen-pair set: its bitmap answers exactly what a search of the keys answers, as
the tables grow, users are removed and catalogues outgrow it; negatives and fits are
the same either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sml.fit import FitConfig, SeenPairs, fit_mf, sample_negatives
from sml.model import MFConfig, MFWeights


def _searched(seen: SeenPairs, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    keys = set(zip((seen.keys >> 32).tolist(), (seen.keys & 0xFFFFFFFF).tolist(), strict=True))
    return np.array([(u, i) in keys for u, i in zip(users.tolist(), items.tolist(),
                                                      strict=True)], dtype=bool)


def test_the_bitmap_answers_as_the_keys_do_while_tables_grow_and_users_leave() -> None:
    rng = np.random.default_rng(0)
    seen = SeenPairs()
    n_users, n_items = 30, 50
    for step in range(6):
        seen.add(rng.integers(0, n_users, 400), rng.integers(0, n_items, 400))
        # the queries reach past the tables (items no pair holds, users not seen yet)
        users, items = rng.integers(0, n_users + 90, 3000), rng.integers(0, n_items + 90, 3000)
        assert seen._dense()
        np.testing.assert_array_equal(seen.contains(users, items), _searched(seen, users, items))
        if step == 3:
            seen.remove_users(np.arange(0, n_users, 2))
            assert not np.isin(seen.keys >> 32, np.arange(0, n_users, 2)).any()
        n_users, n_items = n_users * 2, n_items * 2  # outgrows the bitmap's headroom


def test_a_catalogue_too_large_for_the_bitmap_is_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeenPairs, "DENSE_LIMIT_BITS", 1000)
    rng = np.random.default_rng(1)
    seen = SeenPairs()
    seen.add(rng.integers(0, 100, 500), rng.integers(0, 100, 500))
    users, items = rng.integers(0, 120, 2000), rng.integers(0, 120, 2000)
    assert not seen._dense() and seen._bits is None
    np.testing.assert_array_equal(seen.contains(users, items), _searched(seen, users, items))


def test_negatives_and_fits_are_the_same_with_or_without_the_bitmap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fitted() -> tuple[np.ndarray, MFWeights]:
        rng = np.random.default_rng(2)
        users, items = rng.integers(0, 40, 3000), rng.integers(0, 60, 3000)
        seen = SeenPairs()
        seen.add(users, items)
        negatives = sample_negatives(users, 4, 60, seen, np.random.default_rng(3))
        start = MFWeights.init(MFConfig(dim=8), 40, 60, torch.Generator().manual_seed(0))
        model = fit_mf(start, users, items, seen=seen, config=FitConfig(epochs=2),
                       rng=np.random.default_rng(4))
        return negatives, model

    # the replay's setting: without it the embedding's backward sums in any order
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        dense_negatives, dense_model = fitted()
        monkeypatch.setattr(SeenPairs, "DENSE_LIMIT_BITS", 0)
        searched_negatives, searched_model = fitted()
    finally:
        torch.use_deterministic_algorithms(was)
    np.testing.assert_array_equal(dense_negatives, searched_negatives)
    assert torch.equal(dense_model.user, searched_model.user)
    assert torch.equal(dense_model.item, searched_model.item)


def test_a_checkpointed_set_answers_as_the_one_it_was_saved_from() -> None:
    rng = np.random.default_rng(5)
    seen = SeenPairs()
    seen.add(rng.integers(0, 20, 300), rng.integers(0, 20, 300))
    restored = SeenPairs(seen.keys.copy())
    users, items = rng.integers(0, 25, 1000), rng.integers(0, 25, 1000)
    np.testing.assert_array_equal(restored.contains(users, items), seen.contains(users, items))
