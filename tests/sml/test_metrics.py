"""The protocol's metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sml import bootstrap, candidates
from sml.candidates import Candidates
from sml.data import InteractionLog, Period, from_records
from sml.metrics import (
    KS,
    METRIC_KEYS,
    PeriodEvaluation,
    aggregate,
    evaluate_period,
    ranks,
    recall_ndcg,
    relative_improvement,
)

INF = math.inf
NAN = math.nan


def _ndcg(rank: float) -> float:
    return 1.0 / math.log2(rank + 2.0)


def _log(users: list[int], items: list[int], n_users: int, n_items: int) -> InteractionLog:
    """A log whose dense indices are given directly (rows already in time order)."""
    return InteractionLog(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        timestamps=np.arange(len(users), dtype=np.int64),
        user_ids=tuple(f"u{u}" for u in range(n_users)),
        item_ids=tuple(f"i{i}" for i in range(n_items)),
    )


def _period(log: InteractionLog, index: int, start: int, stop: int) -> Period:
    return Period(
        index=index,
        start=start,
        stop=stop,
        users=log.users[start:stop],
        items=log.items[start:stop],
        timestamps=log.timestamps[start:stop],
        n_users=int(log.users[:stop].max()) + 1,
        n_items=int(log.items[:stop].max()) + 1,
    )


def _random_log(n_rows: int, n_users: int, n_items: int, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    items = rng.integers(0, n_items, n_rows)
    return from_records(
        [f"u{u}" for u in users], [f"i{i}" for i in items], np.arange(n_rows, dtype=np.int64)
    )


# ---------------------------------------------------------------- ranks, recall, ndcg


def test_ranks_count_greater_and_half_of_ties() -> None:
    scores = np.array(
        [
            [3.0, 1.0, 2.0, 0.0],  # best: 0
            [1.0, 2.0, 3.0, 0.0],  # two above: 2
            [2.0, 2.0, 3.0, 2.0],  # one above, two tied: 1 + 1
            [5.0, 5.0, 5.0, 5.0],  # constant: (C - 1) / 2
        ]
    )
    np.testing.assert_array_equal(ranks(scores), [0.0, 2.0, 2.0, 1.5])
    assert ranks(scores).dtype == np.float64


def test_ranks_treat_nan_as_minus_inf() -> None:
    scores = np.array(
        [
            [0.0, -INF, NAN, 1.0],  # only 1.0 above
            [-INF, 0.0, -INF, NAN],  # 0.0 above, -inf and nan (= -inf) tied
            [NAN, -INF, 2.0, -INF],  # nan positive: 2.0 above, two -inf ties
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(ranks(scores), [1.0, 2.0, 2.0])


def test_recall_ndcg_cut_off() -> None:
    rank = np.array([0.0, 1.0, 4.5, 19.0, 19.5, 20.0, 49.5])
    recall, ndcg = recall_ndcg(rank, 20)
    np.testing.assert_array_equal(recall, [1, 1, 1, 1, 1, 0, 0])
    expected = [1.0, 1 / math.log2(3), _ndcg(4.5), _ndcg(19.0), _ndcg(19.5), 0.0, 0.0]
    np.testing.assert_allclose(ndcg, expected)
    recall5, ndcg5 = recall_ndcg(rank, 5)
    np.testing.assert_array_equal(recall5, [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_allclose(ndcg5, [1.0, 1 / math.log2(3), _ndcg(4.5), 0, 0, 0, 0])


def test_metric_keys() -> None:
    assert KS == (5, 10, 20)
    assert METRIC_KEYS == (
        "recall@5",
        "recall@10",
        "recall@20",
        "ndcg@5",
        "ndcg@10",
        "ndcg@20",
        "full_recall@20",
        "full_ndcg@20",
    )


# ---------------------------------------------------------------- candidates


def test_candidates_are_valid_negatives() -> None:
    log = _random_log(2_000, 40, 300)
    cands = Candidates.sample(log, n_negatives=99, seed=2020)
    assert cands.items.shape == (len(log), 100)
    assert cands.items.dtype == np.int32  # 999 negatives for 750k rows: 3 GB, not 6
    np.testing.assert_array_equal(cands.items[:, 0], log.items)
    interacted: dict[int, set[int]] = {}
    for u, i in zip(log.users.tolist(), log.items.tolist(), strict=True):
        interacted.setdefault(u, set()).add(i)
    for u, row in zip(log.users.tolist(), cands.items.tolist(), strict=True):
        negatives = row[1:]
        assert len(set(negatives)) == 99
        assert not set(negatives) & interacted[u]
        assert all(0 <= i < log.n_items for i in negatives)
    np.testing.assert_array_equal(cands.for_rows(10, 20), cands.items[10:20])


def test_candidates_from_a_first_row_cover_only_the_rows_after_it() -> None:
    log = _random_log(2_000, 40, 300)
    tail = Candidates.sample(log, n_negatives=50, seed=3, first_row=1_500)
    assert tail.items.shape == (500, 51) and len(tail) == len(log)
    assert tail.covers(1_500) and not tail.covers(1_499)
    rows = tail.for_rows(1_600, 1_700)
    np.testing.assert_array_equal(rows[:, 0], log.items[1_600:1_700])
    interacted: dict[int, set[int]] = {}
    for u, i in zip(log.users.tolist(), log.items.tolist(), strict=True):
        interacted.setdefault(u, set()).add(i)  # the whole log, rows before 1,500 too
    for u, row in zip(log.users[1_500:].tolist(), tail.items.tolist(), strict=True):
        assert len(set(row[1:])) == 50 and not set(row[1:]) & interacted[u]
    with pytest.raises(ValueError, match="candidates cover rows"):
        tail.for_rows(1_400, 1_600)
    # from row 0 it is the same draw as the default
    np.testing.assert_array_equal(
        Candidates.sample(log, n_negatives=50, seed=3, first_row=0).items,
        Candidates.sample(log, n_negatives=50, seed=3).items,
    )


def test_candidates_are_reproducible() -> None:
    log = _random_log(1_000, 20, 200)
    first = Candidates.sample(log, n_negatives=50, seed=7)
    again = Candidates.sample(log, n_negatives=50, seed=7)
    other = Candidates.sample(log, n_negatives=50, seed=8)
    np.testing.assert_array_equal(first.items, again.items)
    assert not np.array_equal(first.items[:, 1:], other.items[:, 1:])


def test_candidates_take_the_whole_complement_when_it_is_just_enough() -> None:
    # user 0 interacts with items 0..4 of 8: its complement is exactly {5, 6, 7}
    log = _log([0, 0, 0, 0, 0, 1], [0, 1, 2, 3, 4, 0], n_users=2, n_items=8)
    cands = Candidates.sample(log, n_negatives=3, seed=1)
    for row in cands.items[:5]:
        assert sorted(row[1:].tolist()) == [5, 6, 7]


def test_candidates_raise_on_a_too_small_complement() -> None:
    log = _log([0, 0, 0, 1], [0, 1, 2, 0], n_users=2, n_items=4)
    with pytest.raises(candidates.TooFewNegatives, match="u0") as caught:
        Candidates.sample(log, n_negatives=2)
    assert (caught.value.user, caught.value.available) == ("u0", 1)


def test_candidate_draw_is_uniform_even_when_rows_are_redrawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A draw width of exactly k leaves most rows short of k distinct values, so the
    # fallback draw is exercised; every value must still come up equally often.
    monkeypatch.setattr(candidates, "_draw_width", lambda size, k: k)
    rng = np.random.default_rng(0)
    drawn = candidates._draw_distinct(rng, 12, 4, 30_000)
    assert drawn.shape == (30_000, 4)
    assert all(len(set(row)) == 4 for row in drawn.tolist())
    frequency = np.bincount(drawn.ravel(), minlength=12) / (30_000 * 4 / 12)
    np.testing.assert_allclose(frequency, 1.0, atol=0.05)


def test_candidates_on_a_large_log_finish() -> None:
    rng = np.random.default_rng(3)
    n_rows, n_users, n_items = 100_000, 943, 1_682
    log = _log(
        rng.integers(0, n_users, n_rows).tolist(),
        rng.integers(0, n_items, n_rows).tolist(),
        n_users=n_users,
        n_items=n_items,
    )
    cands = Candidates.sample(log)
    assert cands.items.shape == (n_rows, 100)
    np.testing.assert_array_equal(cands.items[:, 0], log.items)


# ---------------------------------------------------------------- evaluate_period

# Users a=0, b=1, c=2; items x=0, y=1, z=2, w=3, v=4. Period 1 is rows [3, 7).
_USERS = [0, 0, 1, 0, 2, 1, 1]
_ITEMS = [0, 1, 0, 2, 1, 0, 3]
_SCORES = np.array(
    [
        [5.0, 4.0, 3.0, 3.0, 1.0],  # a
        [0.0, 1.0, 2.0, 2.0, 3.0],  # b
        [3.0, 2.0, 2.0, NAN, -INF],  # c
    ]
)
# Hand-picked candidates (positive first) for every row; rows 0-2 are not evaluated.
_CANDIDATES = np.array(
    [
        [0, 3, 4],
        [1, 3, 4],
        [0, 1, 2],
        [2, 3, 4],  # a, z: 3 | 3, 1 -> 0.5
        [1, 3, 4],  # c, y: 2 | nan, -inf -> 0
        [0, 1, 4],  # b, x: 0 | 1, 3 -> 2
        [3, 2, 1],  # b, w: 2 | 2, 1 -> 0.5
    ]
)
_SAMPLED_RANKS = [0.5, 0.0, 2.0, 0.5]
# Full ranking, each user's items of rows 0-2 excluded except the positive:
# a, z: x, y excluded; w ties, v below -> 0.5 (2.5 without the exclusion)
# c, y: nothing excluded; x above, z ties, w (nan) and v below -> 1.5
# b, x: x seen before but is the positive; y, z, w, v above -> 4
# b, w: x excluded; v above, z ties, y below -> 1.5
_FULL_RANKS = [0.5, 1.5, 4.0, 1.5]


class _TableScorer:
    """Scores from a fixed (n_users, n_items) table; records each call's users."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.calls: list[list[int]] = []

    def __call__(self, users: np.ndarray) -> np.ndarray:
        self.calls.append(users.tolist())
        return self.table[users]


def _hand_case() -> tuple[InteractionLog, Period, Candidates]:
    log = _log(_USERS, _ITEMS, n_users=3, n_items=5)
    return log, _period(log, 1, 3, 7), Candidates(items=_CANDIDATES, seed=0)


def test_evaluate_period_by_hand() -> None:
    log, period, cands = _hand_case()
    scorer = _TableScorer(_SCORES)
    ev = evaluate_period(scorer, log, period, cands)
    assert ev.period == 1
    assert scorer.calls == [[0, 1, 2]]  # once, each distinct user once
    np.testing.assert_array_equal(ev.returning, [True, False, True, True])
    for k in KS:
        np.testing.assert_array_equal(ev.values[f"recall@{k}"], [1, 1, 1, 1])
        np.testing.assert_allclose(ev.values[f"ndcg@{k}"], [_ndcg(r) for r in _SAMPLED_RANKS])
    np.testing.assert_array_equal(ev.values["full_recall@20"], [1, 1, 1, 1])
    np.testing.assert_allclose(ev.values["full_ndcg@20"], [_ndcg(r) for r in _FULL_RANKS])
    means = ev.mean()
    assert set(means) == set(METRIC_KEYS)
    assert means["ndcg@5"] == pytest.approx(np.mean([_ndcg(r) for r in _SAMPLED_RANKS]))


def test_evaluate_period_in_small_user_batches_gives_the_same_values() -> None:
    log, period, cands = _hand_case()
    whole = evaluate_period(_TableScorer(_SCORES), log, period, cands)
    scorer = _TableScorer(_SCORES.astype(np.float32))
    batched = evaluate_period(scorer, log, period, cands, batch_users=2)
    assert scorer.calls == [[0, 1], [2]]
    for key in METRIC_KEYS:
        np.testing.assert_allclose(batched.values[key], whole.values[key])


def test_evaluate_period_constant_scorer_earns_the_tie_rank() -> None:
    log, period, cands = _hand_case()
    ev = evaluate_period(_TableScorer(np.zeros((3, 5))), log, period, cands)
    # sampled: 2 others, both tied -> 1.0; full: the unseen others split in half
    np.testing.assert_allclose(ev.values["ndcg@5"], [_ndcg(1.0)] * 4)
    full = [0.5 * 2, 0.5 * 4, 0.5 * 4, 0.5 * 3]
    np.testing.assert_allclose(ev.values["full_ndcg@20"], [_ndcg(r) for r in full])


def test_evaluate_period_rejects_a_scorer_of_the_wrong_width() -> None:
    log, period, cands = _hand_case()
    with pytest.raises(ValueError, match="shape"):
        evaluate_period(_TableScorer(_SCORES[:, :4]), log, period, cands)


def test_oracle_scores_perfectly_and_constant_scorer_earns_nothing() -> None:
    log = _random_log(3_000, 60, 400, seed=5)
    period = _period(log, 3, 2_400, 3_000)
    cands = Candidates.sample(log)
    in_period = np.zeros((log.n_users, log.n_items))
    in_period[period.users, period.items] = 1.0

    oracle = evaluate_period(lambda users: in_period[users], log, period, cands).mean()
    for k in KS:  # sampled negatives are never the user's items: rank 0 everywhere
        assert oracle[f"recall@{k}"] == 1.0
        assert oracle[f"ndcg@{k}"] == 1.0
    assert oracle["full_recall@20"] == 1.0  # few ties: about 10 rows per user

    constant = evaluate_period(
        lambda users: np.ones((len(users), log.n_items)), log, period, cands
    ).mean()
    assert all(value == 0.0 for value in constant.values())  # tie rank 49.5 and beyond
    assert ranks(np.ones((4, 100))).tolist() == [49.5] * 4


# ---------------------------------------------------------------- aggregate, RI


def _evaluation(index: int, values: list[float], returning: list[bool]) -> PeriodEvaluation:
    column = np.asarray(values, dtype=np.float64)
    return PeriodEvaluation(
        period=index,
        values={key: column for key in METRIC_KEYS},
        returning=np.asarray(returning, dtype=bool),
    )


def test_aggregate_weights_periods_by_size_and_splits_groups() -> None:
    evals = [
        _evaluation(16, [1.0, 1.0], [True, False]),
        _evaluation(17, [0.0, 0.0, 0.5, 0.0], [True, True, False, False]),
    ]
    everything = aggregate(evals)
    assert everything["recall@20"] == pytest.approx(2.5 / 6)  # not (1 + 0.125) / 2
    assert everything["share"] == 1.0
    assert everything["n"] == 6

    returning = aggregate(evals, "returning")
    assert returning["ndcg@10"] == pytest.approx(1.0 / 3)
    assert returning["share"] == pytest.approx(0.5)
    assert returning["n"] == 3

    first_seen = aggregate(evals, "first_seen")
    assert first_seen["full_ndcg@20"] == pytest.approx(1.5 / 3)
    assert first_seen["share"] == pytest.approx(0.5)
    assert first_seen["n"] == 3


def test_aggregate_of_an_empty_group_is_nan() -> None:
    evals = [_evaluation(0, [1.0, 0.0], [True, True])]
    empty = aggregate(evals, "first_seen")
    assert all(math.isnan(empty[key]) for key in METRIC_KEYS)
    assert empty["share"] == 0.0
    assert empty["n"] == 0
    assert math.isnan(aggregate([])["recall@5"])
    with pytest.raises(ValueError):
        aggregate(evals, "everyone")  # type: ignore[arg-type]


def test_relative_improvement() -> None:
    assert relative_improvement(0.6, 0.5) == pytest.approx(0.2)
    assert relative_improvement(0.4, 0.5) == pytest.approx(-0.2)
    assert math.isnan(relative_improvement(0.3, 0.0))


# ---------------------------------------------------------------- paired bootstrap


def _clustered(n_users: int = 40, per_user: int = 25, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Per-interaction values of two methods; a user's differences share a user effect."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    b = rng.random(len(users))
    effect = rng.normal(0.0, 0.2, n_users)[users]
    return b + 0.05 + effect, b, users


def test_bootstrap_of_identical_methods_is_exactly_zero() -> None:
    _, b, users = _clustered()
    interval = bootstrap.paired_bootstrap(b, b.copy(), users)
    assert (interval.diff, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert not interval.excludes_zero


def test_bootstrap_of_a_constant_difference_is_that_constant() -> None:
    _, b, users = _clustered()
    interval = bootstrap.paired_bootstrap(b + 0.1, b, users)
    for value in (interval.diff, interval.low, interval.high):
        assert value == pytest.approx(0.1, abs=1e-12)
    assert interval.excludes_zero


def test_bootstrap_diff_weights_interactions_and_low_le_diff_le_high() -> None:
    # user 0: two interactions of +1, user 1: one of -1 -> mean over interactions 1/3
    a, b = np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])
    interval = bootstrap.paired_bootstrap(a, b, np.array([0, 0, 1]))
    assert interval.diff == pytest.approx(1 / 3)
    a, b, users = _clustered()
    interval = bootstrap.paired_bootstrap(a, b, users)
    assert interval.low <= interval.diff <= interval.high
    assert interval.diff == pytest.approx(float(np.mean(a - b)))


def test_bootstrap_ignores_row_order() -> None:
    a, b, users = _clustered()
    base = bootstrap.paired_bootstrap(a, b, users)
    order = np.random.default_rng(1).permutation(len(a))
    shuffled = bootstrap.paired_bootstrap(a[order], b[order], users[order])
    assert shuffled.diff == pytest.approx(base.diff, abs=1e-12)
    assert shuffled.low == pytest.approx(base.low, abs=1e-12)
    assert shuffled.high == pytest.approx(base.high, abs=1e-12)


def test_bootstrap_resamples_users_not_interactions() -> None:
    # the same differences, once grouped by 40 users with a shared user effect, once as
    # 1,000 independent users: resampling users must give the grouped case a wider interval
    a, b, users = _clustered()
    grouped = bootstrap.paired_bootstrap(a, b, users)
    independent = bootstrap.paired_bootstrap(a, b, np.arange(len(a)))
    assert grouped.high - grouped.low > 2 * (independent.high - independent.low)
    # shuffling the differences across users breaks the grouping: narrow again
    order = np.random.default_rng(2).permutation(len(a))
    mixed = bootstrap.paired_bootstrap(a[order], b[order], users)
    assert mixed.high - mixed.low < 0.5 * (grouped.high - grouped.low)


def test_bootstrap_is_seeded_and_checks_its_inputs() -> None:
    a, b, users = _clustered()
    assert bootstrap.paired_bootstrap(a, b, users, seed=3) == bootstrap.paired_bootstrap(
        a, b, users, seed=3
    )
    assert bootstrap.paired_bootstrap(a, b, users, seed=3) != bootstrap.paired_bootstrap(
        a, b, users, seed=4
    )
    narrow = bootstrap.paired_bootstrap(a, b, users, level=0.5)
    wide = bootstrap.paired_bootstrap(a, b, users, level=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    empty = bootstrap.paired_bootstrap(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert math.isnan(empty.diff) and math.isnan(empty.low) and math.isnan(empty.high)
    with pytest.raises(ValueError, match="alike"):
        bootstrap.paired_bootstrap(a, b[:-1], users)
