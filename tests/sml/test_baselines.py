"""SPMF's rank-based draw from its reservoir: who gets drawn, reproducibility, checkpoints."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from sml.baselines import SPMF, BaselineConfig
from sml.data import split_equal_count
from sml.fit import FitConfig
from sml.model import MFConfig, MFWeights
from sml.strategy import PeriodData
from sml.synthetic import SyntheticConfig, synthetic_drift

N_ITEMS = 10


def _ranked_spmf(**config: object) -> SPMF:
    """An SPMF whose model ranks item i at place i for every user, reservoir (u, i) for all."""
    spmf = SPMF(BaselineConfig(mf=MFConfig(dim=2), **config))  # type: ignore[arg-type]
    item = torch.zeros(N_ITEMS, 3)
    item[:, -1] = torch.linspace(1.0, -1.0, N_ITEMS)  # bias: item 0 first, item 9 last
    spmf.current = MFWeights(torch.zeros(3, 3), item)
    spmf.reservoir_users = np.repeat(np.arange(3), N_ITEMS)
    spmf.reservoir_items = np.tile(np.arange(N_ITEMS), 3)
    return spmf


def _one_row() -> PeriodData:
    return PeriodData(np.array([0]), np.array([0]), 3, N_ITEMS)


def test_probabilities_rise_with_rank_and_low_ranked_pairs_are_drawn_more() -> None:
    spmf = _ranked_spmf(reservoir_draws=30_000)
    np.testing.assert_array_equal(spmf.reservoir_ranks(), spmf.reservoir_items.astype(float))
    p = spmf.draw_probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert np.all(np.diff(p[:N_ITEMS]) > 0)  # one user's pairs, from first to last place
    # the paper's rule: p ~ exp(rank / n_items)
    assert p[N_ITEMS - 1] / p[0] == pytest.approx(np.exp((N_ITEMS - 1) / N_ITEMS))
    users, items, weights = spmf._training_pairs(_one_row())
    assert weights is None  # nothing weighted: the unweighted loss
    assert len(users) == 1 + 30_000  # D_t whole, then the draws
    counts = np.bincount(items[1:], minlength=N_ITEMS)
    assert counts[-1] > 2 * counts[0]
    assert counts[-3:].sum() > counts[:3].sum()


def test_sharper_draws_concentrate_on_the_last_ranked_and_zero_is_uniform() -> None:
    mild, sharp = _ranked_spmf(), _ranked_spmf(rank_sharpness=5.0)
    last = mild.reservoir_items == N_ITEMS - 1
    assert sharp.draw_probabilities()[last].sum() > mild.draw_probabilities()[last].sum()
    flat = _ranked_spmf(rank_sharpness=0.0).draw_probabilities()
    np.testing.assert_allclose(flat, np.full(len(flat), 1 / len(flat)))


def test_draw_size_defaults_to_the_periods_size() -> None:
    spmf = _ranked_spmf()
    period = PeriodData(np.zeros(7, dtype=np.int64), np.arange(7), 3, N_ITEMS)
    users, _, _ = spmf._training_pairs(period)
    assert len(users) == 14
    assert len(_ranked_spmf(reservoir_draws=0)._training_pairs(period)[0]) == 7


def test_the_seed_reproduces_the_draw() -> None:
    first = _ranked_spmf(seed=3)._training_pairs(_one_row())
    again = _ranked_spmf(seed=3)._training_pairs(_one_row())
    other = _ranked_spmf(seed=4)._training_pairs(_one_row())
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="rank_sharpness"):
        BaselineConfig(rank_sharpness=-1.0)
    with pytest.raises(ValueError, match="reservoir_draws"):
        BaselineConfig(reservoir_draws=-5)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: gradient scatters add in a fixed order, so reruns are bit-equal."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_checkpoint_round_trip_gives_identical_next_boundaries() -> None:
    log = synthetic_drift(SyntheticConfig(n_periods=5, interactions_per_period=400, seed=2))
    periods = split_equal_count(log, n_periods=5)
    config = BaselineConfig(
        mf=MFConfig(dim=4), fit=FitConfig(epochs=1, batch_size=256), reservoir_size=300, seed=7
    )
    spmf = SPMF(config)
    for period in periods[:3]:
        spmf.boundary(period)
    buffer = io.BytesIO()
    torch.save(spmf.state_dict(), buffer)  # as a worker checkpoints it
    buffer.seek(0)
    clone = SPMF(config)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    for period in periods[3:]:
        a, b = spmf.boundary(period), clone.boundary(period)
        assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)
        np.testing.assert_array_equal(spmf.reservoir_users, clone.reservoir_users)
        np.testing.assert_array_equal(spmf.reservoir_items, clone.reservoir_items)
        assert spmf.stream_length == clone.stream_length
