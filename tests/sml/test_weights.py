"""Interaction weights in training: each interaction's term of L_0 is multiplied by its
weight, in every strategy; weights of 1 train exactly what no weights train, and
checkpoints carry the weights a strategy keeps between periods."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from sml.data import split_equal_count
from sml.fit import Batch, FitConfig, SeenPairs, run_epochs
from sml.model import MFConfig, MFWeights, bce_loss, score_all
from sml.registry import ALL_METHODS, make_strategy
from sml.strategy import PeriodData, concat_periods, join_weights
from sml.synthetic import SyntheticConfig, synthetic_drift

TRAINED = [m for m in ALL_METHODS if m != "popularity"]  # popularity only counts


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Exact comparisons need one torch thread: with more, a gradient summed across
    threads may differ in its last bits from one run to the next, weights or none."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def periods() -> list:
    log = synthetic_drift(SyntheticConfig(n_periods=3, interactions_per_period=500, seed=5))
    return split_equal_count(log, n_periods=3)


def _with(period: object, weights: np.ndarray | None) -> PeriodData:
    users: np.ndarray = period.users  # type: ignore[attr-defined]
    return PeriodData(users, period.items, period.n_users, period.n_items,  # type: ignore[attr-defined]
                      weights)


def test_weights_of_one_give_the_unweighted_loss_and_gradients_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    u, p, n = (torch.randn(*shape, generator=generator, requires_grad=True)
               for shape in ((64, 9), (64, 9), (64, 4, 9)))
    plain = bce_loss(u, p, n)
    (grad_plain,) = torch.autograd.grad(plain, u)
    ones = bce_loss(u, p, n, torch.ones(64))
    (grad_ones,) = torch.autograd.grad(ones, u)
    assert torch.equal(plain, ones) and torch.equal(grad_plain, grad_ones)


def test_each_interactions_term_is_multiplied_by_its_weight() -> None:
    generator = torch.Generator().manual_seed(1)
    u, p, n = (torch.randn(*shape, generator=generator) for shape in ((5, 3), (5, 3), (5, 2, 3)))
    weight = torch.tensor([1.0, 3.0, 0.5, 10.0, 2.0])
    terms = torch.stack([bce_loss(u[b : b + 1], p[b : b + 1], n[b : b + 1]) for b in range(5)])
    expected = (weight * terms).sum() / 5  # the mean over the batch of the weighted terms
    assert bce_loss(u, p, n, weight).item() == pytest.approx(expected.item(), rel=1e-6)


def test_batches_carry_each_interactions_weight_through_the_shuffle() -> None:
    users = np.arange(50, dtype=np.int64)
    weights = np.arange(50, dtype=np.float64) / 10
    seen: list[Batch] = []

    def loss_of(batch: Batch) -> torch.Tensor:
        seen.append(batch)
        return (param * 0).sum()

    param = torch.zeros(1, requires_grad=True)
    run_epochs([param], loss_of, users, users % 7, n_items=7, seen=SeenPairs(),
               config=FitConfig(epochs=1, batch_size=16), rng=np.random.default_rng(0),
               weights=weights)
    for batch in seen:
        assert batch.weight is not None
        assert torch.equal(batch.weight, batch.users.float() / 10)


@pytest.mark.parametrize("name", TRAINED)
def test_weights_of_one_train_exactly_what_no_weights_train(periods: list, name: str) -> None:
    plain, ones = make_strategy(name, dim=8, seed=2), make_strategy(name, dim=8, seed=2)
    for period in periods:
        a = plain.boundary(period)
        b = ones.boundary(_with(period, np.ones(len(period.users))))
        assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)


def _catalogue_periods(n_periods: int, target: int) -> list[PeriodData]:
    """Every item about as popular as every other; each user picks 6 of 30 items."""
    rng = np.random.default_rng(11)
    out = []
    for _ in range(n_periods):
        users = np.repeat(np.arange(80), 6)
        items = np.concatenate([rng.choice(30, 6, replace=False) for _ in range(80)])
        weights = np.where(items == target, 30.0, 1.0)
        out.append(PeriodData(users, items.astype(np.int64), 80, 30, weights))
    return out


def _mean_rank(model: MFWeights, item: int) -> float:
    with torch.no_grad():
        scores = score_all(model, torch.arange(model.n_users))  # (U, n_items)
    return float((scores > scores[:, item : item + 1]).sum(1).float().mean())


@pytest.mark.parametrize("name", TRAINED)
def test_a_heavily_weighted_item_ranks_higher_than_the_same_data_unweighted(name: str) -> None:
    target = 7
    weighted = _catalogue_periods(3, target)
    plain, heavy = make_strategy(name, dim=8, seed=3), make_strategy(name, dim=8, seed=3)
    for period in weighted:
        unweighted = plain.boundary(PeriodData(period.users, period.items, 80, 30))
        model = heavy.boundary(period)
    assert _mean_rank(model, target) < _mean_rank(unweighted, target) - 1


@pytest.mark.parametrize("name", ["sml", "full_retrain", "spmf"])
def test_checkpoints_keep_the_weights_the_strategy_holds(periods: list, name: str) -> None:
    weighted = [_with(p, np.random.default_rng(n).uniform(0.5, 3.0, len(p.users)))
                for n, p in enumerate(periods)]
    first = make_strategy(name, dim=8, seed=4)
    for period in weighted[:2]:
        first.boundary(period)
    resumed = make_strategy(name, dim=8, seed=4)
    resumed.load_state_dict(first.state_dict())
    a, b = first.boundary(weighted[2]), resumed.boundary(weighted[2])
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)


def test_a_checkpoint_written_before_weights_loads_unweighted(periods: list) -> None:
    for name in ("sml", "full_retrain", "spmf"):
        strategy = make_strategy(name, dim=8, seed=4)
        strategy.boundary(periods[0])
        state = strategy.state_dict()
        for key in ("history_weights", "reservoir_weights"):
            state.pop(key, None)
        if state.get("last") is not None:
            state["last"].pop("weights", None)
        clone = make_strategy(name, dim=8, seed=4)
        clone.load_state_dict(state)
        a, b = strategy.boundary(periods[1]), clone.boundary(periods[1])
        assert torch.equal(a.user, b.user), name


def test_unweighted_and_weighted_periods_mix(periods: list) -> None:
    """A period without weights weighs 1 beside one with them (full-retrain's history,
    SPMF's reservoir, a warm start's run of periods)."""
    assert join_weights([(2, None), (3, None)]) is None
    np.testing.assert_array_equal(join_weights([(2, None), (1, np.array([4.0]))]),
                                  [1.0, 1.0, 4.0])
    mixed = [periods[0], _with(periods[1], np.full(len(periods[1].users), 2.0))]
    joined = concat_periods(mixed)
    assert joined.weights is not None and len(joined.weights) == len(joined.users)
    assert set(joined.weights.tolist()) == {1.0, 2.0}
    for name in ("full_retrain", "spmf"):
        strategy = make_strategy(name, dim=8, seed=6)
        for period in [*mixed, periods[2]]:
            strategy.boundary(period)
        held = getattr(strategy, "history_weights", getattr(strategy, "reservoir_weights", None))
        kept = getattr(strategy, "history_users", getattr(strategy, "reservoir_users", None))
        assert held is not None and kept is not None and len(held) == len(kept)
        assert set(np.unique(held)) <= {1.0, 2.0}


def test_a_warm_start_keeps_the_last_periods_weights(periods: list) -> None:
    weighted = _with(periods[1], np.full(len(periods[1].users), 3.0))
    sml = make_strategy("sml", dim=8, seed=1)
    base = MFWeights.init(MFConfig(dim=8), periods[1].n_users, periods[1].n_items,
                          torch.Generator().manual_seed(0))
    sml.warm_start(base, [periods[0], weighted])
    last = sml.last  # type: ignore[attr-defined]
    assert last.weights is not None and set(last.weights.tolist()) == {3.0}
