"""Online evaluation: the candidates follow the protocol, and the batched
metrics equal a per-interaction computation over the same candidates."""

from __future__ import annotations

import numpy as np
import torch

from sml.metrics import ranks, recall_ndcg
from sml.model import MFWeights, score_all
from worker.evaluate import N_NEGATIVES, SeenIndex, candidates, negatives, online_metrics


def test_negatives_are_distinct_unseen_and_uniform() -> None:
    rng = np.random.default_rng(0)
    exclude = np.array([0, 3, 4, 9])
    counts = np.zeros(12)
    for _ in range(3000):
        drawn = negatives(rng, 12, exclude, 5)
        assert len(drawn) == 5 and len(set(drawn.tolist())) == 5
        assert not set(drawn.tolist()) & set(exclude.tolist())
        counts[drawn] += 1
    allowed = np.setdiff1d(np.arange(12), exclude)
    expected = 3000 * 5 / len(allowed)  # 1,875 per allowed item
    assert np.all(np.abs(counts[allowed] - expected) < 0.1 * expected)
    assert counts[exclude].sum() == 0
    assert sorted(negatives(rng, 12, exclude, 8).tolist()) == allowed.tolist()  # all left


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, SeenIndex, MFWeights]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 300
    users = rng.integers(0, n_users + 5, 500)  # some users the model does not know
    items = rng.integers(0, n_items, 500)
    seen = SeenIndex.build(users, items, n_users + 5)
    generator = torch.Generator().manual_seed(seed)
    weights = MFWeights(torch.randn(n_users, 9, generator=generator),
                        torch.randn(n_items - 20, 9, generator=generator))  # 20 items unknown
    return users, items, seen, weights


def test_candidates_follow_the_protocol() -> None:
    users, items, seen, _ = _data()
    cand, width = candidates(users, items, 300, seen, np.random.default_rng(1))
    assert cand.shape == (500, 1 + N_NEGATIVES) and np.all(width == 1 + N_NEGATIVES)
    assert np.array_equal(cand[:, 0], items)
    for row in range(500):
        others = cand[row, 1:]
        assert len(np.unique(others)) == N_NEGATIVES
        assert not np.isin(others, seen.of(int(users[row]))).any()


def test_metrics_equal_ranking_against_every_item_score() -> None:
    """Scoring only the candidates gives the ranks ``score_all`` gives."""
    users, items, seen, weights = _data()
    result = online_metrics(weights, users, items, 300, seen, seed=3, period_id=4,
                            rows_per_step=7)
    cand, _ = candidates(users, items, 300, seen, np.random.default_rng(3 + 4))
    scores = score_all(weights, torch.from_numpy(users), 300).numpy()  # (n, 300)
    rank = ranks(np.take_along_axis(scores, cand, axis=1))
    recall, ndcg = recall_ndcg(rank, 20)
    assert result["n_interactions"] == 500
    assert result["recall@20"] == float(recall.mean())
    assert abs(result["ndcg@20"] - float(ndcg.mean())) < 1e-12
    assert 0.0 < result["recall@20"] < 1.0


def test_users_with_few_unseen_items_rank_among_what_is_left() -> None:
    users = np.array([0, 0, 1])
    items = np.array([1, 2, 0])
    seen = SeenIndex.build(np.array([0, 0, 0, 1]), np.array([1, 2, 5, 0]), 2)
    weights = MFWeights(torch.randn(2, 3), torch.randn(8, 3))
    cand, width = candidates(users, items, 8, seen, np.random.default_rng(0))
    assert width.tolist() == [6, 6, 8]  # 8 items: user 0 has 3 seen, user 1 has 1
    assert sorted(cand[0, 1:6].tolist()) == [0, 3, 4, 6, 7]  # every unseen item, once
    result = online_metrics(weights, users, items, 8, seen, seed=0, period_id=0)
    assert result["recall@20"] == 1.0  # fewer than 20 candidates: every item is a hit
