"""Online evaluation of a served model on the period that just closed.

For each interaction (u, i) of D_t the candidates are i and 99 items drawn
uniformly without replacement from the items known at the end of D_t that u has
not interacted with up to the end of D_t (all of them when fewer are left); the
generator is ``numpy.random.default_rng(seed + period_id)``. The model's scores
(``sml.model.score_all``: unknown users get the item biases, items beyond the
model's table score -inf) rank i among its candidates; the figures are the
means of Recall@20 and NDCG@20 over the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sml.metrics import ranks, recall_ndcg
from sml.model import MFWeights

K = 20
N_NEGATIVES = 99


@dataclass(frozen=True)
class SeenIndex:
    """The items each user interacted with, as CSR: user u's items are
    ``items[indptr[u]:indptr[u + 1]]``, sorted and distinct."""

    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (nnz,) int64

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> SeenIndex:
        # one int64 key per pair (user-major), so the unique is a flat sort
        width = int(items.max()) + 1 if len(items) else 1
        keys = np.unique(users.astype(np.int64) * width + items.astype(np.int64))  # (nnz,)
        pair_users, pair_items = np.divmod(keys, width)
        counts = np.bincount(pair_users, minlength=n_users)[:n_users]  # (n_users,)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr=indptr, items=pair_items)

    def of(self, user: int) -> np.ndarray:
        if user + 1 >= len(self.indptr):
            return np.empty(0, dtype=np.int64)
        return self.items[self.indptr[user] : self.indptr[user + 1]]


def negatives(rng: np.random.Generator, n_items: int, exclude: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct items of [0, n_items) outside ``exclude`` (sorted, distinct,
    in range), uniformly without replacement, in random order: the first ``k``
    of a random ordered sample of k + len(exclude) items that are not excluded.
    Costs O(k + len(exclude)), not O(n_items)."""
    drawn = rng.choice(n_items, size=min(n_items, k + len(exclude)), replace=False)
    if len(exclude):
        drawn = drawn[~np.isin(drawn, exclude, assume_unique=True)]
    return drawn[:k]


def candidates(
    users: np.ndarray, items: np.ndarray, n_items: int, seen: SeenIndex, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per interaction row: its item, then its negatives: (n, 1 + N_NEGATIVES) and
    how many columns of each row are used (fewer where a user has fewer unseen
    items left). Users are visited in ascending index, each one's rows in order."""
    n = len(users)
    out = np.zeros((n, 1 + N_NEGATIVES), dtype=np.int64)
    width = np.full(n, 1 + N_NEGATIVES, dtype=np.int64)
    out[:, 0] = items
    order = np.argsort(users, kind="stable")  # rows grouped by user, period order within
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for rows in np.split(order, bounds) if n else []:
        exclude = seen.of(int(users[rows[0]]))
        exclude = exclude[exclude < n_items]
        k = min(N_NEGATIVES, n_items - len(exclude))
        width[rows] = 1 + k
        for row in rows:
            out[row, 1 : 1 + k] = negatives(rng, n_items, exclude, k)
    return out, width


def candidate_scores(weights: MFWeights, users: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``score_all``'s scores of just the candidates: (n, C) for users (n,) and
    candidate items (n, C). Unknown users get the item biases; items beyond the
    model's table score -inf."""
    item = weights.item  # (n_model_items, d + 1)
    user = torch.from_numpy(users)
    known = user < weights.n_users
    user_emb = torch.zeros(len(users), weights.dim, dtype=item.dtype)  # (n, d)
    user_emb[known] = weights.user[user[known], :-1]
    index = torch.from_numpy(cand)
    inside = index < weights.n_items  # (n, C)
    rows = item[index.clamp(max=max(weights.n_items - 1, 0))]  # (n, C, d + 1)
    scores = torch.bmm(rows[:, :, :-1], user_emb[:, :, None]).squeeze(2) + rows[:, :, -1]
    return scores.masked_fill_(~inside, -torch.inf).numpy()


def online_metrics(
    weights: MFWeights,
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    seen: SeenIndex,
    *,
    seed: int,
    period_id: int,
    rows_per_step: int = 1024,
) -> dict[str, Any]:
    """Recall@20 and NDCG@20 of ``weights`` on one period's interactions
    (``users``, ``items``: dense indices), with ``seen`` covering the period.
    Only the candidates are scored (not every item), ``rows_per_step`` rows at
    a time."""
    rng = np.random.default_rng(seed + period_id)
    n = len(users)
    cand, width = candidates(users, items, n_items, seen, rng)
    rank = np.empty(n, dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, n, rows_per_step):
            hi = min(n, lo + rows_per_step)
            scores = candidate_scores(weights, users[lo:hi], cand[lo:hi])  # (r, C)
            rank[lo:hi] = ranks(scores)
            for r in np.flatnonzero(width[lo:hi] < cand.shape[1]):  # few unseen items left
                rank[lo + r] = ranks(scores[r : r + 1, : width[lo + r]])[0]
    recall, ndcg = recall_ndcg(rank, K) if n else (rank, rank)
    return {
        "evaluated_on_period": int(period_id),
        f"recall@{K}": float(recall.mean()) if n else None,
        f"ndcg@{K}": float(ndcg.mean()) if n else None,
        "n_interactions": int(n),
    }
