"""Sequential meta-learning: boundaries change W, Theta moves once a next period exists,
checkpoints resume exactly, the variants and baselines run."""

from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pytest
import torch

from sml.check import CHECK_NEGATIVES, CHECK_TOP, candidate_scores, ranking_score
from sml.data import split_equal_count
from sml.fit import FitConfig, SeenPairs, fit_mf, sample_negatives
from sml.model import MFConfig, MFWeights
from sml.registry import ALL_METHODS, make_strategy, transfer_state
from sml.strategy import PeriodData
from sml.synthetic import SyntheticConfig, synthetic_drift
from sml.trainer import MetaConfig, SMLConfig, SMLStrategy

SMALL = SMLConfig(
    mf=MFConfig(dim=8),
    fit=FitConfig(epochs=2, batch_size=512),
    meta=MetaConfig(epochs=1, batch_size=512),
)
UNCHECKED = replace(SMALL, meta=replace(SMALL.meta, check=False))  # Theta served at once


@pytest.fixture(scope="module")
def periods() -> list:
    log = synthetic_drift(SyntheticConfig(n_periods=4, interactions_per_period=600, seed=3))
    return split_equal_count(log, n_periods=4)


def _theta(strategy: SMLStrategy) -> dict[str, torch.Tensor]:
    state = transfer_state(strategy)
    assert state is not None
    return state


def test_boundaries_change_w_and_theta_from_the_third_on(periods: list) -> None:
    sml = SMLStrategy(UNCHECKED)
    thetas = [_theta(sml)]
    models = []
    for period in periods[:4]:
        models.append(sml.boundary(period))
        thetas.append(_theta(sml))
    # the first boundary is the cold start (plain MF), the second merges it with the next
    # period's fit but has no earlier pair (previous model, fit) to learn Theta from
    assert all(torch.equal(thetas[0][k], thetas[2][k]) for k in thetas[0])
    assert sml.fitted is not None and sml.served.anchor is not None
    # from the third on, the previous boundary's pair and its next period train Theta
    assert any(not torch.equal(thetas[2][k], thetas[3][k]) for k in thetas[2])
    assert any(not torch.equal(thetas[3][k], thetas[4][k]) for k in thetas[3])
    assert sml.theta_updates == 2 and sml.learner is None
    # W changes every period, and the tables grow with new users and items
    assert models[1].user.shape[0] == periods[1].n_users
    assert models[2].item.shape[0] == periods[2].n_items
    assert not torch.allclose(models[1].item[: models[0].n_items], models[0].item)


def test_a_frozen_transfer_serves_what_fine_tuning_serves(periods: list) -> None:
    """Untrained, the transfer returns W-hat: SML's step 1 is then fine-tuning, so with
    Theta never updated both strategies serve the same model (same seed, same draws)."""
    from sml.baselines import BaselineConfig, FineTune

    sml = SMLStrategy(UNCHECKED)
    sml.set_update_transfer(False)
    tune = FineTune(BaselineConfig(mf=UNCHECKED.mf, fit=UNCHECKED.fit))
    for period in periods[:3]:
        a, b = sml.boundary(period), tune.boundary(period)
        assert torch.allclose(a.user, b.user, atol=1e-5)
        assert torch.allclose(a.item, b.item, atol=1e-5)
    assert sml.fitted is not None and torch.equal(sml.fitted.user, sml.model.user)  # type: ignore[union-attr]


def test_a_window_of_two_fits_w_hat_on_the_period_and_the_one_before(periods: list) -> None:
    """With ``step_one_window=2`` step 1 fits W-hat on D_{t-1} and D_t, which the strategy
    holds anyway: Theta frozen, SML then serves what fine-tuning on both periods serves,
    and rows only the earlier period touched move too (with one period they stay)."""
    from sml.baselines import BaselineConfig, FineTune
    from sml.strategy import concat_periods

    two = replace(UNCHECKED, step_one="own", step_one_window=2)
    sml, one = SMLStrategy(two), SMLStrategy(replace(two, step_one_window=1))
    tune = FineTune(BaselineConfig(mf=two.mf, fit=two.fit))
    for strategy in (sml, one):
        strategy.set_update_transfer(False)
        strategy.boundary(periods[0])
    tune.boundary(periods[0])
    before = sml.model
    assert before is not None
    a = sml.boundary(periods[1])
    b = tune.boundary(concat_periods(periods[:2]))
    assert torch.allclose(a.user, b.user, atol=1e-5) and torch.allclose(a.item, b.item, atol=1e-5)
    earlier_only = np.setdiff1d(periods[0].users, periods[1].users)
    assert len(earlier_only) > 0
    assert not torch.allclose(a.user[earlier_only], before.user[earlier_only])
    assert torch.equal(one.boundary(periods[1]).user[earlier_only], before.user[earlier_only])


def test_a_history_sample_reminds_step_one_of_pairs_no_window_holds(periods: list) -> None:
    """With ``step_one_history=r`` step 1 also fits r x |D_t| pairs drawn from all pairs seen so
    far: users only the first period had (outside D_{t-1} and D_t) move too, while
    without it their rows stay; after their data is deleted no draw returns them."""
    own = replace(UNCHECKED, step_one="own", step_one_window=2)
    reminded, plain = SMLStrategy(replace(own, step_one_history=1.0)), SMLStrategy(own)
    for strategy in (reminded, plain):
        strategy.set_update_transfer(False)
        for period in periods[:2]:
            strategy.boundary(period)
    oldest = np.setdiff1d(periods[0].users, np.concatenate([p.users for p in periods[1:3]]))
    assert len(oldest) > 0
    kept, moved = plain.model, reminded.model
    assert kept is not None and moved is not None
    assert torch.equal(plain.boundary(periods[2]).user[oldest], kept.user[oldest])
    assert not torch.allclose(reminded.boundary(periods[2]).user[oldest], moved.user[oldest])
    reminded.forget_users(oldest)
    users, _ = reminded.seen.sample(5000, np.random.default_rng(0))
    assert not np.isin(users, oldest).any()


def test_seen_pairs_are_sampled_uniformly_among_themselves() -> None:
    seen = SeenPairs()
    seen.add(np.array([0, 0, 1, 2]), np.array([3, 5, 3, 7]))
    users, items = seen.sample(40_000, np.random.default_rng(0))
    pairs, counts = np.unique(np.stack([users, items]), axis=1, return_counts=True)
    assert pairs.T.tolist() == [[0, 3], [0, 5], [1, 3], [2, 7]]
    assert counts.min() > 9_500 and counts.max() < 10_500


@pytest.mark.parametrize("rows_only", [False, True])
def test_an_extra_draw_is_fitted_in_its_own_epoch(rows_only: bool) -> None:
    """``fit_mf``'s ``extra`` is drawn once per epoch and its pairs join that epoch: users
    drawn only in some epoch move, users neither the period nor a draw holds stay."""
    start = MFWeights.init(MFConfig(dim=8), 10, 20, torch.Generator().manual_seed(0))
    users = items = np.array([0, 1, 2])
    seen = SeenPairs()
    seen.add(users, items)
    drawn: list[int] = []

    def draw() -> tuple[np.ndarray, np.ndarray]:
        drawn.append(3 + len(drawn))  # user and item 3 in the first epoch, 4, then 5
        return np.array(drawn[-1:]), np.array(drawn[-1:])

    config = FitConfig(epochs=3, lr=0.01, n_negatives=1, batch_size=64, rows_only=rows_only)
    out = fit_mf(start, users, items, seen=seen, config=config,
                 rng=np.random.default_rng(0), extra=draw)
    assert drawn == [3, 4, 5]
    moved = [not torch.equal(out.user[u], start.user[u]) for u in range(10)]
    assert moved == [True] * 6 + [False] * 4


@pytest.mark.parametrize("draw", ["once", "epoch"])
def test_the_history_sample_is_drawn_once_or_for_every_epoch(periods: list, draw: str) -> None:
    """``history_draw="epoch"`` draws step 1's history sample anew for each of its epochs
    (as many steps, more distinct pairs of the history), ``"once"`` for the whole fit."""
    config = replace(UNCHECKED, step_one="own", step_one_history=0.5, history_draw=draw)
    strategy = SMLStrategy(config)
    strategy.set_update_transfer(False)
    strategy.boundary(periods[0])
    sizes: list[int] = []
    sample = strategy.seen.sample

    def counted(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sizes.append(n)
        return sample(n, rng)

    strategy.seen.sample = counted  # type: ignore[method-assign]
    strategy.boundary(periods[1])
    draws = 1 if draw == "once" else config.fit.epochs
    assert config.fit.epochs > 1 and sizes == [round(0.5 * len(periods[1].users))] * draws


def test_step_two_at_rate_zero_is_the_frozen_transfer(periods: list) -> None:
    """Rate 0 learns nothing, so no meta step runs: SML serves exactly what SML-0 (Theta
    never updated) serves, with the check on, and pays for one lineage only."""
    still = replace(SMALL, meta=replace(SMALL.meta, lr=0.0, rounds=2))
    sml, frozen = SMLStrategy(still), SMLStrategy(still)
    frozen.set_update_transfer(False)
    for period in periods:
        a, b = sml.boundary(period), frozen.boundary(period)
        assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)
    assert sml.theta_updates == 0 and sml.same
    assert sml.promotions == sml.rejections == 0


def test_a_transfer_still_at_its_start_is_never_run_to_merge(periods: list) -> None:
    """At rate 0 Theta stays trainable but never moves from the identity, so the merge
    returns W-hat without evaluating the network (on a Yelp-sized log that evaluation was
    two of a boundary's five CPU seconds); once Theta moves, every merge runs it."""
    still = replace(UNCHECKED, meta=replace(UNCHECKED.meta, lr=0.0), step_one="own")
    sml = SMLStrategy(still)
    calls = _count_transfer_runs(sml)
    sml.boundary(periods[0])
    for period in periods[1:3]:
        served = sml.boundary(period)
        hat = sml.fitted
        assert hat is not None and torch.equal(served.user, hat.user)
    assert calls == {"fit": 0, "other": 0}
    assert all(p.requires_grad for p in sml.transfers.parameters())
    with torch.no_grad():
        sml.transfers.user.out.bias.fill_(0.125)  # type: ignore[union-attr]
    served, hat = sml.boundary(periods[3]), sml.fitted
    assert hat is not None
    assert calls["other"] > 0 and not torch.equal(served.user, hat.user)


def test_rows_the_period_did_not_touch_are_carried_over(periods: list) -> None:
    """Scope "touched": a user absent from D_t keeps W_{t-1}'s row exactly (absent from
    D_{t-1} too, or the meta step refines the row W_{t-1} merged); with scope "all" the
    same rows pass through the (trained) transfer again and move."""
    rows = {}
    for scope in ("touched", "all"):
        sml = SMLStrategy(replace(UNCHECKED, scope=scope))
        for period in periods[:3]:
            sml.boundary(period)
        before = sml.model
        assert before is not None
        after = sml.boundary(periods[3])
        absent = np.setdiff1d(
            np.arange(before.n_users), np.concatenate([periods[2].users, periods[3].users])
        )
        assert len(absent) > 0
        rows[scope] = (before.user[absent], after.user[absent])
        present = np.unique(periods[3].users)
        present = present[present < before.n_users]
        assert not torch.allclose(before.user[present], after.user[present])
    assert torch.equal(*rows["touched"])
    assert not torch.allclose(*rows["all"])


def test_a_learner_that_serves_worse_is_never_served(periods: list) -> None:
    """A learning rate far too high wrecks the learner's merges: scored on each closing
    period it loses to the served lineage, whose Theta stays the fine-tune start."""
    wild = replace(SMALL, meta=replace(SMALL.meta, lr=5.0, epochs=2))
    sml = SMLStrategy(wild)
    start = _theta(sml)
    for period in periods:
        sml.boundary(period)
    assert sml.learner is not None and sml.rejections >= 1 and sml.promotions == 0
    assert all(torch.equal(start[k], v) for k, v in _theta(sml).items())
    learned = {k: v.detach() for k, v in sml.learner.transfers.state_dict().items()}
    assert any(not torch.equal(start[k], v) for k, v in learned.items())
    # the same updates without the check are served at once
    unchecked = SMLStrategy(replace(wild, meta=replace(wild.meta, check=False)))
    for period in periods:
        unchecked.boundary(period)
    assert any(not torch.equal(start[k], v) for k, v in _theta(unchecked).items())


def test_a_learner_that_serves_better_is_adopted(periods: list) -> None:
    """The served W_{t-1} made useless (all zeros): the learner ranks the closing period
    better and becomes the served lineage, Theta included."""
    sml = SMLStrategy(SMALL)
    for period in periods[:3]:
        sml.boundary(period)
    assert sml.learner is not None and not sml.same
    broken = sml.served.current
    assert broken is not None
    sml.served.current = MFWeights(torch.zeros_like(broken.user), torch.zeros_like(broken.item))
    learned = {k: v.detach().clone() for k, v in sml.learner.transfers.state_dict().items()}
    sml.boundary(periods[3])
    assert sml.promotions == 1
    adopted = _theta(sml)
    # adopted, then trained no further: the served lineage keeps the proven Theta
    assert all(torch.equal(learned[k], adopted[k]) for k in learned)


def test_frozen_transfer_keeps_theta(periods: list) -> None:
    sml = SMLStrategy(SMALL)
    sml.boundary(periods[0])
    sml.set_update_transfer(False)
    before = _theta(sml)
    sml.boundary(periods[1])
    sml.boundary(periods[2])
    after = _theta(sml)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_walks_differing_only_in_theta_fit_the_served_w_hat_from_the_same_draws(
    periods: list,
) -> None:
    """Step 2 (and the check and the learner lineage) draw from their own stream: a walk
    whose step 2 runs but cannot move Theta serves what the walk without step 2 serves, so
    two candidate rates differ by what Theta learned, not by the luck of step 1's draws.
    (With the check, an adopted learner brings its own fit, drawn from the other stream.)"""
    config = UNCHECKED
    frozen = SMLStrategy(replace(config, meta=replace(config.meta, lr=0.0)))
    still = SMLStrategy(replace(config, meta=replace(config.meta, lr=1e-30)))
    for period in periods:
        w_frozen, w_still = frozen.boundary(period), still.boundary(period)
    assert frozen.theta_updates == 0 and still.theta_updates == len(periods) - 2
    assert torch.allclose(w_frozen.user, w_still.user, atol=1e-6)
    assert torch.allclose(w_frozen.item, w_still.item, atol=1e-6)
    # a rate that does move Theta serves something else
    moving = SMLStrategy(replace(config, meta=replace(config.meta, lr=1e-2, check=False)))
    for period in periods:
        w_moving = moving.boundary(period)
    assert not torch.allclose(w_frozen.user, w_moving.user, atol=1e-3)


@pytest.mark.parametrize("config", [SMALL, UNCHECKED], ids=["check", "no_check"])
def test_checkpoint_resumes_exactly(config: SMLConfig, periods: list) -> None:
    """Both random streams resume: step 1's and the meta step's (Theta's next update)."""
    a = SMLStrategy(config)
    for period in periods[:3]:  # the third boundary runs a meta step
        a.boundary(period)
    b = SMLStrategy(config)
    b.load_state_dict(a.state_dict())
    for period in periods[3:]:
        wa, wb = a.boundary(period), b.boundary(period)
        assert torch.allclose(wa.user, wb.user, atol=1e-5)
        assert torch.allclose(wa.item, wb.item, atol=1e-5)
    theta_a, theta_b = _theta(a), _theta(b)
    assert all(torch.allclose(theta_a[k], theta_b[k], atol=1e-6) for k in theta_a)


def test_a_checkpoint_of_one_lineage_still_loads(periods: list) -> None:
    """State written before the two lineages (W and Theta at the top level) resumes as
    the served lineage."""
    sml = SMLStrategy(SMALL)
    sml.boundary(periods[0])
    sml.boundary(periods[1])
    state = sml.state_dict()
    old = {k: v for k, v in state.items() if k not in ("served", "learner", "same")}
    old.update(state["served"])
    resumed = SMLStrategy(SMALL)
    resumed.load_state_dict(old)
    assert resumed.model is not None and torch.equal(resumed.model.user, sml.model.user)  # type: ignore[union-attr]
    assert resumed.learner is not None and resumed.same


def test_state_dict_loads_with_weights_only(periods: list, tmp_path) -> None:
    sml = SMLStrategy(SMALL)
    sml.boundary(periods[0])
    sml.boundary(periods[1])
    torch.save(sml.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = SMLStrategy(SMALL)
    fresh.load_state_dict(state)
    assert fresh.model is not None and torch.equal(fresh.model.user, sml.model.user)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", [m for m in ALL_METHODS])
def test_every_method_runs_and_round_trips(name: str, periods: list) -> None:
    strategy = make_strategy(name, dim=8, seed=1)
    for period in periods[:2]:
        model = strategy.boundary(period)
        assert model.user.shape == (period.n_users, 9)
        assert model.item.shape == (period.n_items, 9)
        assert torch.isfinite(model.user).all() and torch.isfinite(model.item).all()
    clone = make_strategy(name, dim=8, seed=1)
    clone.load_state_dict(strategy.state_dict())
    a, b = strategy.boundary(periods[2]), clone.boundary(periods[2])
    # equal up to the order of float additions in multi-threaded gradient scatters
    assert torch.allclose(a.item, b.item, atol=1e-5)


def test_same_seed_same_model(periods: list) -> None:
    runs = []
    for _ in range(2):
        sml = make_strategy("sml", dim=8, seed=5)
        for period in periods[:3]:
            w = sml.boundary(period)
        runs.append(w)
    assert torch.equal(runs[0].user, runs[1].user)


def test_negatives_never_hit_seen_pairs() -> None:
    rng = np.random.default_rng(0)
    seen = SeenPairs()
    users = rng.integers(0, 50, 2000)
    items = rng.integers(0, 40, 2000)
    seen.add(users, items)
    neg = sample_negatives(np.arange(50), 5, 40, seen, rng, max_tries=50)
    rows = np.repeat(np.arange(50), 5)
    assert not seen.contains(rows, neg.ravel()).any()


def test_spmf_reservoir_is_bounded_and_uniform() -> None:
    from sml.baselines import SPMF, BaselineConfig

    spmf = SPMF(BaselineConfig(mf=MFConfig(dim=4), fit=FitConfig(epochs=1), reservoir_size=100))
    counts = np.zeros(10)
    for t in range(10):
        users = np.full(100, t, dtype=np.int64)
        spmf._remember(PeriodData(users, np.arange(100, dtype=np.int64), 10, 100))
        assert len(spmf.reservoir_users) == min(100, 100 * (t + 1))
    counts += np.bincount(spmf.reservoir_users, minlength=10)
    # every period equally likely in the reservoir: no period holds more than a third
    assert counts.max() < 34 and spmf.stream_length == 1000


def test_popularity_scores_follow_counts() -> None:
    pop = make_strategy("popularity", dim=4)
    model = pop.boundary(
        PeriodData(np.zeros(6, dtype=np.int64), np.array([2, 2, 2, 0, 0, 1]), 1, 3)
    )
    assert torch.argsort(model.item[:, -1], descending=True).tolist() == [2, 0, 1]


def test_sml_frozen_never_trains_theta(periods: list) -> None:
    frozen = make_strategy("sml_frozen", dim=8, seed=2)
    start = _theta(frozen)  # type: ignore[arg-type]
    for period in periods:
        frozen.boundary(period)
    assert isinstance(frozen, SMLStrategy) and frozen.theta_updates == 0
    assert all(torch.equal(start[k], v) for k, v in _theta(frozen).items())
    assert frozen.fitted is not None and torch.equal(frozen.fitted.item, frozen.model.item)  # type: ignore[union-attr]


def _count_transfer_runs(sml: SMLStrategy) -> dict[str, int]:
    """Counts, from now on, the forward passes of the served lineage's transfers made
    while W-hat is being fit ("fit") and at any other time ("other")."""
    calls = {"fit": 0, "other": 0}
    fitting = [False]
    original = sml._fit_hat

    def fit_hat(*args: Any, **kwargs: Any) -> MFWeights:
        fitting[0] = True
        try:
            return original(*args, **kwargs)
        finally:
            fitting[0] = False

    def count(*_: object) -> None:
        calls["fit" if fitting[0] else "other"] += 1

    sml._fit_hat = fit_hat  # type: ignore[method-assign]
    for module in (sml.transfers.user, sml.transfers.item):
        module.register_forward_hook(count)
    return calls


@pytest.mark.parametrize("step_one", ["transfer", "own"])
def test_step_one_goes_through_the_transfer_only_when_asked(periods: list, step_one: str) -> None:
    """``step_one="own"`` (SML-FP) fits W-hat on its own MF loss: the transfer is not run
    while W-hat is fit, only to merge; through the transfer it runs on every batch."""
    sml = SMLStrategy(replace(UNCHECKED, step_one=step_one))  # type: ignore[arg-type]
    calls = _count_transfer_runs(sml)
    for period in periods[:4]:
        sml.boundary(period)
    assert sml.theta_updates == 2  # Theta was trained either way
    assert calls["other"] > 0  # merges and step 2 use the transfer either way
    assert (calls["fit"] > 0) == (step_one == "transfer")


def test_sml_fp_is_step_one_on_its_own_loss() -> None:
    assert SMALL.for_variant("sml_fp").step_one == "own"
    assert SMALL.for_variant("sml").step_one == "transfer"


def test_an_untrained_transfer_serves_w_hat_at_every_merge(periods: list) -> None:
    """With Theta at its fine-tune start, each boundary's served model is exactly the
    W-hat it fitted (the rows the period touched) and the previous model elsewhere:
    f(W_{t-1}, W-hat_t) = W-hat_t, not W_{t-1}."""
    sml = SMLStrategy(UNCHECKED)
    sml.set_update_transfer(False)
    previous = sml.boundary(periods[0])
    for period in periods[1:3]:
        served = sml.boundary(period)
        hat = sml.fitted
        assert hat is not None
        assert torch.equal(served.user, hat.user) and torch.equal(served.item, hat.item)
        # and the period moved them: the served rows are not the previous model's
        grown = previous.user.shape[0]
        assert not torch.equal(served.user[:grown], previous.user)
        previous = served


def test_a_merge_adds_the_learned_correction_to_w_hat(periods: list) -> None:
    """A transfer whose output layer holds only a bias b: every merged row is
    W-hat's row plus b times the column's scale (the previous model's RMS), and
    every row the period did not touch keeps W_{t-1}'s value."""
    from sml.transfer import column_scale

    sml = SMLStrategy(UNCHECKED)
    sml.set_update_transfer(False)
    sml.boundary(periods[0])
    with torch.no_grad():
        for side in (sml.transfers.user, sml.transfers.item):
            side.out.bias.fill_(0.125)  # type: ignore[union-attr]
    served = sml.boundary(periods[1])
    hat, anchor = sml.fitted, sml.served.anchor
    assert hat is not None and anchor is not None
    for name in ("user", "item"):
        prev, fitted, out = getattr(anchor, name), getattr(hat, name), getattr(served, name)
        touched = (fitted != prev).any(dim=1)
        assert bool(touched.any())
        expected = fitted[touched] + 0.125 * column_scale(prev)
        assert torch.allclose(out[touched], expected, atol=1e-6)
        assert torch.equal(out[~touched], prev[~touched])



def test_the_check_scores_the_top_of_the_list_as_serving_shows_it() -> None:
    """The lineages are compared by sampled Recall@CHECK_TOP: a model that puts every
    interaction just outside the top loses to one that puts half of them at the top and
    the rest last, although the first orders more (positive, negative) pairs right."""
    n_neg = CHECK_NEGATIVES
    users = torch.zeros(2, dtype=torch.long)
    pos = torch.tensor([0, 1])
    neg = torch.arange(2, 2 + n_neg).repeat(2, 1)  # (2, n_neg): the same negatives

    def model(pos_scores: list[float]) -> MFWeights:
        # one user with embedding 1 and no bias: an item's score is its embedding
        item = torch.zeros(2 + n_neg, 2)
        item[2:, 0] = torch.arange(n_neg, 0, -1, dtype=torch.float32)  # negatives n_neg..1
        item[:2, 0] = torch.tensor(pos_scores)
        return MFWeights(torch.tensor([[1.0, 0.0]]), item)

    top = CHECK_TOP
    just_outside = n_neg - top + 0.5  # above all but `top` negatives: rank top + 1
    steady = model([just_outside, just_outside])
    split = model([n_neg + 1.0, 0.0])  # first, and last
    check = (users, pos, neg)
    assert ranking_score(steady, check) == 0.0
    assert ranking_score(split, check) == 0.5
    just_inside = model([n_neg - top + 1.5, n_neg - top + 1.5])  # rank top
    assert ranking_score(just_inside, check) == 1.0
    tied = model([n_neg - top + 1.0] * 2)  # tied with the top-th negative: half a place
    assert ranking_score(tied, check) == 1.0


@pytest.mark.parametrize(("n_users", "n_items", "n_rows", "n_candidates"),
                         [(3, 10, 30, 5), (40, 1000, 30, 2)])
def test_the_checks_scores_are_the_models_scores(
    n_users: int, n_items: int, n_rows: int, n_candidates: int
) -> None:
    """Both ways of scoring the candidates (the distinct users against the catalogue, and
    gathering each row's candidates) give the model's scores less the user bias, with
    users beyond the tables scored by item biases; chunking does not change the check."""
    g = torch.Generator().manual_seed(0)
    model = MFWeights(torch.randn(n_users, 5, generator=g), torch.randn(n_items, 5, generator=g))
    users = torch.randint(0, n_users + 2, (n_rows,), generator=g)  # some beyond the table
    items = torch.randint(0, n_items, (n_rows, n_candidates), generator=g)
    u = torch.zeros(n_rows, 5)
    known = users < n_users
    u[known] = model.user[users[known]]
    u[:, -1] = 0.0  # the user bias ranks nothing
    expected = (u.unsqueeze(1)[..., :-1] * model.item[items][..., :-1]).sum(-1) + model.item[
        items, -1
    ]
    got = candidate_scores(model, users, items)
    assert torch.allclose(got, expected, atol=1e-5)
    check = (users, items[:, 0], items[:, 1:])
    assert ranking_score(model, check, chunk=7) == ranking_score(model, check)


def test_each_variant_name_sets_its_configuration() -> None:
    """Every variant name sets what it stands for whatever the base configuration holds
    (SML-ST back to step 1 through the transfer, the transfer kinds of SML-CNN and SML-FC),
    the names driven differently leave it as it is, and an unknown name is refused."""
    own = replace(SMALL, step_one="own")
    assert SMALL.for_variant("sml_n") == replace(SMALL, variant="sml_n")
    assert own.for_variant("sml_st") == replace(own, step_one="transfer")
    assert own.for_variant("sml_fp") == own
    assert SMALL.for_variant("sml_cnn").transfer == replace(SMALL.transfer, kind="no_cnn")
    assert SMALL.for_variant("sml_fc").transfer == replace(SMALL.transfer, kind="no_fc")
    assert all(own.for_variant(name) == own for name in ("sml", "sml_s", "sml_frozen"))
    with pytest.raises(ValueError, match="unknown SML variant 'sml_x'"):
        SMALL.for_variant("sml_x")


def test_a_checkpoint_names_its_strategy_and_holds_its_configuration() -> None:
    """The checkpoint carries the strategy's name ("sml" unless given) and its whole
    configuration as plain nested values."""
    config = replace(SMALL, meta=replace(SMALL.meta, lr=0.02))
    state = SMLStrategy(config, name="sml_s").state_dict()
    assert state["strategy"] == "sml_s"
    assert state["config"] == asdict(config) and state["config"]["meta"]["lr"] == 0.02
    assert SMLStrategy(SMALL).name == SMLStrategy(SMALL).state_dict()["strategy"] == "sml"


def test_a_fresh_strategy_checkpoints_and_resumes(periods: list) -> None:
    """Before any boundary the checkpoint holds no model, no last period and zero counts,
    with the learner a copy of the served lineage; it loads, and the resumed strategy
    cold-starts exactly as the original does."""
    sml = SMLStrategy(SMALL)
    state = sml.state_dict()
    assert state["last"] is None and state["same"] is True and state["update_transfer"] is True
    assert state["boundaries"] == state["theta_updates"] == 0
    assert state["promotions"] == state["rejections"] == 0
    resumed = SMLStrategy(SMALL)
    resumed.load_state_dict(state)
    assert resumed.model is None and resumed.last is None and resumed.same
    a, b = sml.boundary(periods[0]), resumed.boundary(periods[0])
    assert torch.equal(a.user, b.user) and torch.equal(a.item, b.item)


def test_a_checkpoint_keeps_both_lineages_the_last_period_and_the_counts(periods: list) -> None:
    """With the lineages apart, the checkpoint restores the learner as it was (not a copy
    of the served one), the last period, the boundaries and the check's counts; the
    resumed strategy then serves what the original serves."""
    sml = SMLStrategy(SMALL)
    for period in periods[:3]:
        sml.boundary(period)
    assert sml.boundaries == 3 and sml.theta_updates == 1
    sml.promotions, sml.rejections = 2, 3  # as a longer run leaves them
    state = sml.state_dict()
    assert state["same"] is False and state["boundaries"] == 3
    resumed = SMLStrategy(SMALL)
    resumed.load_state_dict(state)
    assert resumed.learner is not None and sml.learner is not None and not resumed.same
    learner, served = resumed.learner.current, resumed.served.current
    assert learner is not None and served is not None and sml.learner.current is not None
    assert torch.equal(learner.item, sml.learner.current.item)
    assert not torch.equal(learner.item, served.item)
    assert (resumed.boundaries, resumed.theta_updates) == (3, 1)
    assert (resumed.promotions, resumed.rejections) == (2, 3)
    assert resumed.last is not None and sml.last is not None
    assert np.array_equal(resumed.last.users, periods[2].users)
    assert (resumed.last.n_users, resumed.last.n_items) == (periods[2].n_users, periods[2].n_items)
    a, b = sml.boundary(periods[3]), resumed.boundary(periods[3])
    assert torch.allclose(a.item, b.item, atol=1e-5)
    assert sml.promotions + sml.rejections == resumed.promotions + resumed.rejections == 6


def test_a_checkpoint_without_the_counts_resumes_them_at_zero(periods: list) -> None:
    """State written before the Theta updates and the check's outcomes were counted loads
    with those counts at zero (and the learner a copy of the served lineage)."""
    sml = SMLStrategy(SMALL)
    for period in periods[:3]:
        sml.boundary(period)
    sml.promotions = sml.rejections = 1
    dropped = ("theta_updates", "promotions", "rejections", "same", "learner")
    old = {k: v for k, v in sml.state_dict().items() if k not in dropped}
    resumed = SMLStrategy(SMALL)
    resumed.load_state_dict(old)
    assert (resumed.theta_updates, resumed.promotions, resumed.rejections) == (0, 0, 0)
    assert resumed.same and resumed.boundaries == 3


def _base(period: PeriodData, seed: int = 7) -> MFWeights:
    """A stand-in for a pretrained model sized to ``period``'s tables."""
    generator = torch.Generator().manual_seed(seed)
    return MFWeights.init(SMALL.mf, period.n_users, period.n_items, generator)


def test_a_warm_start_serves_the_base_with_no_model_before_it(periods: list) -> None:
    """A warm start serves the base, knows every pair of its history as seen, takes the
    history's last period as D_{t-1} at the base's sizes, and (no model before the base)
    runs no meta step at the next boundary."""
    history = periods[:3]
    base = _base(periods[2])
    sml = SMLStrategy(UNCHECKED)
    sml.warm_start(base, history)
    assert sml.model is not None
    assert torch.equal(sml.model.user, base.user) and torch.equal(sml.model.item, base.item)
    assert sml.fitted is None and sml.served.anchor is None
    users = np.concatenate([p.users for p in history])
    items = np.concatenate([p.items for p in history])
    assert sml.seen.contains(users, items).all()
    assert len(sml.seen) == len(set(zip(users.tolist(), items.tolist(), strict=True)))
    last = sml.state_dict()["last"]
    assert np.array_equal(last["users"].numpy(), periods[2].users)
    assert np.array_equal(last["items"].numpy(), periods[2].items)
    assert (last["n_users"], last["n_items"]) == (base.n_users, base.n_items)
    theta = _theta(sml)
    sml.boundary(periods[3])
    assert sml.theta_updates == 0 and sml.fitted is not None
    assert all(torch.equal(theta[k], v) for k, v in _theta(sml).items())


def test_a_warm_start_with_an_init_anchor_learns_at_the_next_boundary(periods: list) -> None:
    """``warm_anchor="init"``: fresh rows drawn from the strategy's seed (not torch's global
    generator) play the model before the base, the base is the fit merged with them, and
    the next boundary trains Theta."""
    config = replace(UNCHECKED, warm_anchor="init", seed=4)
    base = _base(periods[2])
    torch.manual_seed(1)
    sml = SMLStrategy(config)
    sml.warm_start(base, periods[:3])
    seeded = torch.Generator().manual_seed(4)
    expected = MFWeights.init(config.mf, base.n_users, base.n_items, seeded)
    anchor = sml.served.anchor
    assert anchor is not None
    assert torch.equal(anchor.user, expected.user) and torch.equal(anchor.item, expected.item)
    assert sml.fitted is not None and torch.equal(sml.fitted.user, base.user)
    theta = _theta(sml)
    sml.boundary(periods[3])
    assert sml.theta_updates == 1
    assert any(not torch.equal(theta[k], v) for k, v in _theta(sml).items())


def test_the_transfer_update_can_be_turned_back_on(periods: list) -> None:
    """SML-S freezes Theta in test periods only: turned back on, the next boundary trains
    it again."""
    sml = SMLStrategy(UNCHECKED)
    sml.boundary(periods[0])
    sml.set_update_transfer(False)
    sml.boundary(periods[1])
    sml.boundary(periods[2])
    assert sml.theta_updates == 0
    theta = _theta(sml)
    sml.set_update_transfer(True)
    sml.boundary(periods[3])
    assert sml.theta_updates == 1 and sml.state_dict()["update_transfer"] is True
    assert any(not torch.equal(theta[k], v) for k, v in _theta(sml).items())


def _apart(config: SMLConfig, periods: list) -> SMLStrategy:
    """A strategy after three boundaries: the learner has trained Theta once, the served
    lineage has not."""
    sml = SMLStrategy(config)
    for period in periods[:3]:
        sml.boundary(period)
    assert sml.learner is not None and not sml.same
    return sml


def _zeroed(model: MFWeights | None) -> MFWeights:
    assert model is not None
    return MFWeights(torch.zeros_like(model.user), torch.zeros_like(model.item))


def test_a_tie_keeps_the_served_lineage(periods: list) -> None:
    """Lineages that rank the closing period equally well (both all zeros): the learner is
    not adopted, the served Theta stays."""
    sml = _apart(SMALL, periods)
    assert sml.learner is not None
    sml.served.current = _zeroed(sml.served.current)
    sml.learner.current = _zeroed(sml.learner.current)
    served = _theta(sml)
    sml.boundary(periods[3])
    assert (sml.promotions, sml.rejections) == (0, 1)
    assert all(torch.equal(served[k], v) for k, v in _theta(sml).items())


def test_a_closing_period_of_one_interaction_is_still_scored(periods: list) -> None:
    """The check compares the lineages on a period with a single interaction."""
    sml = _apart(SMALL, periods)
    last = periods[2]
    one = PeriodData(last.users[:1], last.items[:1], last.n_users, last.n_items)
    sml.boundary(one)
    assert sml.promotions + sml.rejections == 1


def test_every_adoption_counts_and_leaves_the_learner_a_copy(periods: list) -> None:
    """Each adoption is counted; after one at a boundary without learning (transfer
    frozen), the learner is again a copy of the served lineage: same model, same Theta."""
    sml = _apart(SMALL, periods)
    sml.served.current = _zeroed(sml.served.current)
    sml.boundary(periods[3])
    assert sml.promotions == 1 and not sml.same  # adopted, then trained further
    sml.served.current = _zeroed(sml.served.current)
    sml.set_update_transfer(False)
    sml.boundary(periods[3])
    assert sml.promotions == 2 and sml.same
    assert sml.learner is not None
    learner, served = sml.learner.current, sml.served.current
    assert learner is not None and served is not None
    assert torch.equal(learner.user, served.user) and torch.equal(learner.item, served.item)
    learned = transfer_state(sml, learner=True)
    assert learned is not None and all(torch.equal(learned[k], v) for k, v in _theta(sml).items())


def test_every_rejection_counts_once(periods: list) -> None:
    """A learner made useless (all zeros) before each of two comparisons loses both: two
    rejections, no adoption."""
    sml = _apart(SMALL, periods)
    for _ in range(2):
        assert sml.learner is not None
        sml.learner.current = _zeroed(sml.learner.current)
        sml.boundary(periods[3])
    assert (sml.promotions, sml.rejections) == (0, 2)


def _changed(before: dict[str, torch.Tensor], sml: SMLStrategy, side: str = "") -> bool:
    """Whether any of Theta's tensors (of one side, "user." or "item.", if given) moved."""
    after = _theta(sml)
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(side))


@pytest.mark.parametrize("variant", ["sml", "sml_n"])
def test_sml_n_trains_theta_on_the_fitted_period_itself(periods: list, variant: str) -> None:
    """SML trains Theta on the next period D_t, SML-N on D_{t-1} (W-hat's own period): with
    D_t holding only items W-hat does not know, SML has nothing to learn from, SML-N does."""
    sml = SMLStrategy(replace(UNCHECKED, variant=variant))  # type: ignore[arg-type]
    for period in periods[:3]:
        sml.boundary(period)
    known, users = periods[2].n_items, periods[3].users
    fresh = PeriodData(users, known + np.arange(len(users)) % 5, periods[3].n_users, known + 5)
    theta = _theta(sml)
    sml.boundary(fresh)
    assert sml.theta_updates == 2
    assert _changed(theta, sml) == (variant == "sml_n")


@pytest.mark.parametrize("first_seen", ["include", "skip"])
def test_objective_users_the_tables_do_not_know_are_skipped_only_when_asked(
    periods: list, first_seen: str
) -> None:
    """``first_seen="skip"``: step 2 drops objective users beyond W-hat's table (the first
    one past its end included), so a period of such users teaches Theta nothing; one known
    user's interaction is enough to train it; "include" trains on them all."""
    meta = replace(UNCHECKED.meta, first_seen=first_seen)  # type: ignore[arg-type]
    sml = SMLStrategy(replace(UNCHECKED, meta=meta))
    for period in periods[:3]:
        sml.boundary(period)
    n_users, n_items, items = periods[2].n_users, periods[2].n_items, periods[2].items[:50]
    newcomers = np.full(50, n_users)  # the first user past W-hat's table
    theta = _theta(sml)
    sml.boundary(PeriodData(newcomers, items, n_users + 1, n_items))
    assert _changed(theta, sml) == (first_seen == "include")
    # W-hat now knows user n_users: the next newcomer is n_users + 1
    one_known = np.concatenate([periods[2].users[:1], newcomers + 1])
    theta = _theta(sml)
    sml.boundary(PeriodData(one_known, np.concatenate([items[:1], items]), n_users + 2, n_items))
    assert _changed(theta, sml)


@pytest.mark.parametrize("step_one", ["transfer", "own"])
def test_each_fit_runs_with_its_own_settings(
    periods: list, step_one: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cold start and step 1 run ``fit`` (step 1's epochs), step 2 runs ``meta``'s epochs,
    negatives and batch size, and the rounds after the first refit W-hat through the
    transfer for ``refit_epochs`` (never with ``step_one="own"``, whose W-hat is its own fit)."""
    import sml.trainer as trainer

    runs: list[tuple[str, int, int, int]] = []
    run_epochs, fit_mf = trainer.run_epochs, trainer.fit_mf

    def record(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            config = kwargs["config"]
            runs.append((name, config.epochs, config.n_negatives, config.batch_size))
            return original(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(trainer, "run_epochs", record("epochs", run_epochs))
    monkeypatch.setattr(trainer, "fit_mf", record("mf", fit_mf))
    meta = replace(UNCHECKED.meta, rounds=2, refit_epochs=3, n_negatives=2, batch_size=256)
    sml = SMLStrategy(replace(UNCHECKED, meta=meta, step_one=step_one))  # type: ignore[arg-type]
    for period in periods[:3]:
        sml.boundary(period)
    fit = ("epochs", 2, 4, 512) if step_one == "transfer" else ("mf", 2, 4, 512)
    step_two = ("epochs", 1, 2, 256)
    refit = [("epochs", 3, 4, 512)] if step_one == "transfer" else []
    assert runs == [("mf", 2, 4, 512), fit, step_two, *refit, step_two, fit]


def test_thetas_optimizer_runs_at_the_meta_rate_and_is_kept_only_when_asked(periods: list) -> None:
    """Step 2 steps the lineage's own Adam at ``meta.lr``: with ``keep_optimizer`` its
    step count runs on across boundaries, without it the checkpointed Adam has counted
    the last step 2 only."""
    counts = {}
    for kept in (True, False):
        meta = replace(UNCHECKED.meta, lr=0.01, keep_optimizer=kept)
        sml = SMLStrategy(replace(UNCHECKED, meta=meta))
        for period in periods:
            sml.boundary(period)
        assert sml.theta_updates == 2
        adam = sml.state_dict()["served"]["theta_optimizer"]
        assert [group["lr"] for group in adam["param_groups"]] == [0.01]
        counts[kept] = {int(s["step"]) for s in adam["state"].values()}
    # one step count for every tensor of Theta (all of them trained together)
    assert len(counts[True]) == len(counts[False]) == 1
    assert min(counts[False]) > 0 and min(counts[True]) > min(counts[False])


def _untouched(config: SMLConfig, periods: list) -> tuple[SMLStrategy, MFWeights]:
    """Three boundaries, then W-hat_{t-1} set to the model it was fit from (as if D_{t-1}
    had touched no row); returns the strategy and that model."""
    sml = SMLStrategy(config)
    for period in periods[:3]:
        sml.boundary(period)
    anchor = sml.served.anchor
    assert anchor is not None
    sml.served.hat = anchor
    return sml, anchor


@pytest.mark.parametrize("scope", ["touched", "all"])
def test_step_two_and_the_refined_model_merge_the_rows_the_scope_names(
    periods: list, scope: str
) -> None:
    """With W-hat_{t-1} equal to the model before it, scope "touched" merges no row: step 2
    has no loss through Theta (and no regulariser here), and the refined W_{t-1} is that
    model; scope "all" passes every user and item row through f, so both sides of Theta
    learn and the refined model's rows move."""
    meta = replace(UNCHECKED.meta, lr=0.01, l2=0.0, keep_optimizer=False)
    sml, anchor = _untouched(replace(UNCHECKED, meta=meta, scope=scope), periods)  # type: ignore[arg-type]
    theta = _theta(sml)
    sml.boundary(periods[3])
    assert sml.theta_updates == 2
    refined = sml.served.anchor  # W_{t-1} as the meta step left it, grown for D_t
    assert refined is not None
    users, items = refined.user[: anchor.n_users], refined.item[: anchor.n_items]
    merges = scope == "all"
    assert _changed(theta, sml, "user.") == _changed(theta, sml, "item.") == merges
    assert torch.equal(users, anchor.user) != merges
    assert torch.equal(items, anchor.item) != merges


def test_step_two_regularises_theta_towards_zero(periods: list) -> None:
    """Step 2's loss adds ``meta.l2`` times Theta's squared norm: with nothing else to learn
    from (no row merged) both sides of Theta shrink."""
    meta = replace(UNCHECKED.meta, lr=0.01, l2=1.0, keep_optimizer=False)
    sml, _ = _untouched(replace(UNCHECKED, meta=meta), periods)

    def norms() -> list[float]:
        theta = _theta(sml)
        return [
            sum(float(v.square().sum()) for k, v in theta.items() if k.startswith(side))
            for side in ("user.", "item.")
        ]

    before = norms()
    sml.boundary(periods[3])
    after = norms()
    assert after[0] < before[0] and after[1] < before[1]


def test_a_frozen_transfer_is_never_run_while_w_hat_is_fit(periods: list) -> None:
    """Step 1 through a transfer that is the identity and learns nothing costs what
    fine-tuning costs: W-hat's fit never evaluates it."""
    sml = SMLStrategy(UNCHECKED)
    sml.set_update_transfer(False)
    calls = _count_transfer_runs(sml)
    for period in periods[:3]:
        sml.boundary(period)
    assert calls["fit"] == 0
    assert all(p.grad is None for p in sml.transfers.parameters())


def test_step_one_measures_the_transfers_correction_in_the_columns_scale(periods: list) -> None:
    """Step 1 fits W-hat through f with the columns' scale of the model it starts from: a
    transfer whose correction is a bias b adds b times that scale, so W-hat fits otherwise
    than with the transfer's inputs unscaled (``scale_inputs=False``: b itself)."""
    hats = []
    for scaled in (True, False):
        transfer = replace(UNCHECKED.transfer, scale_inputs=scaled)
        sml = SMLStrategy(replace(UNCHECKED, transfer=transfer))
        sml.set_update_transfer(False)
        for period in periods[:3]:
            sml.boundary(period)
        with torch.no_grad():
            for side in (sml.transfers.user, sml.transfers.item):
                side.out.bias.fill_(0.125)  # type: ignore[union-attr]
        sml.boundary(periods[3])
        hats.append(sml.fitted)
    assert hats[0] is not None and hats[1] is not None
    assert not torch.allclose(hats[0].user, hats[1].user, atol=1e-4)
    assert not torch.allclose(hats[0].item, hats[1].item, atol=1e-4)
