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
from sml.model import MFWeights, score_all

K = 20
N_NEGATIVES = 99
# Largest number of array elements one vectorised step materialises.
_ELEMENT_BUDGET = 1 << 22


@dataclass(frozen=True)
class SeenIndex:
    """The items each user interacted with, as CSR: user u's items are
    ``items[indptr[u]:indptr[u + 1]]``, sorted and distinct."""

    indptr: np.ndarray  # (n_users + 1,) int64
    items: np.ndarray  # (nnz,) int64

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> SeenIndex:
        pairs = (
            np.unique(np.stack([users.astype(np.int64), items.astype(np.int64)], axis=1), axis=0)
            if len(users)
            else np.empty((0, 2), dtype=np.int64)
        )  # (nnz, 2) sorted by user, item
        counts = np.bincount(pairs[:, 0], minlength=n_users)[:n_users]  # (n_users,)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr=indptr, items=pairs[:, 1].copy())

    def of(self, user: int) -> np.ndarray:
        if user + 1 >= len(self.indptr):
            return np.empty(0, dtype=np.int64)
        return self.items[self.indptr[user] : self.indptr[user + 1]]


def _draw(rng: np.random.Generator, size: int, k: int, n_rows: int) -> np.ndarray:
    """``n_rows`` draws of ``k`` distinct positions out of ``size``: (n_rows, k)."""
    out = np.empty((n_rows, k), dtype=np.int64)
    step = max(1, _ELEMENT_BUDGET // max(size, 1))
    for lo in range(0, n_rows, step):
        hi = min(n_rows, lo + step)
        keys = rng.random((hi - lo, size))  # (r, size)
        out[lo:hi] = (
            np.argpartition(keys, k - 1, axis=1)[:, :k] if k < size else np.argsort(keys, axis=1)
        )
    return out


def online_metrics(
    weights: MFWeights,
    users: np.ndarray,
    items: np.ndarray,
    n_items: int,
    seen: SeenIndex,
    *,
    seed: int,
    period_id: int,
) -> dict[str, Any]:
    """Recall@20 and NDCG@20 of ``weights`` on one period's interactions
    (``users``, ``items``: dense indices), with ``seen`` covering the period."""
    rng = np.random.default_rng(seed + period_id)
    n = len(users)
    recall = np.zeros(n, dtype=np.float64)
    ndcg = np.zeros(n, dtype=np.float64)
    catalog = np.arange(n_items, dtype=np.int64)
    order = np.argsort(users, kind="stable")  # rows grouped by user, period order within
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    with torch.no_grad():
        for rows in np.split(order, bounds) if n else []:
            user = int(users[rows[0]])
            complement = np.setdiff1d(catalog, seen.of(user), assume_unique=True)  # (m,)
            k = min(N_NEGATIVES, len(complement))
            negatives = complement[_draw(rng, len(complement), k, len(rows))]  # (r, k)
            candidates = np.concatenate([items[rows, None], negatives], axis=1)  # (r, 1 + k)
            user_scores = score_all(weights, torch.tensor([user]), n_items)[0].numpy()  # (C,)
            rank = ranks(user_scores[candidates])  # (r,)
            recall[rows], ndcg[rows] = recall_ndcg(rank, K)
    return {
        "evaluated_on_period": int(period_id),
        f"recall@{K}": float(recall.mean()) if n else None,
        f"ndcg@{K}": float(ndcg.mean()) if n else None,
        "n_interactions": int(n),
    }
