"""Top-K scoring on a :class:`ServingModel`: one matrix product per batch of users,
seen items masked with -inf, ``torch.topk``. No Python loop runs over items.

score(u, i) = U[u] · V[i] + b_i (the user bias does not change a user's ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.holder import ServingModel

# Score at most this many (user, item) cells at once (128 MiB of float32).
MAX_CELLS = 1 << 25


@dataclass(frozen=True)
class TopK:
    """Item indices by score descending and their scores."""

    items: np.ndarray  # (<= k,) int64
    scores: np.ndarray  # (<= k,) float32


def seen_pairs(
    indptr: np.ndarray, items: np.ndarray, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs of a CSR restricted to ``users`` (row r = users[r])."""
    starts, ends = indptr[users], indptr[users + 1]  # (B,), (B,)
    lengths = ends - starts
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)  # (total,)
    # position of each pair in ``items``: its row's start plus its rank within the row
    first = np.cumsum(lengths) - lengths  # (B,) offset of each row in the output
    positions = np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)
    return rows, items[positions]


def extra_pairs(extra: Sequence[np.ndarray | None], n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs from one array of item indices per row (None: nothing);
    items outside the model's table are dropped."""
    lengths = np.array([0 if e is None else len(e) for e in extra], dtype=np.int64)
    if not lengths.sum():
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    rows = np.repeat(np.arange(len(extra), dtype=np.int64), lengths)
    cols = np.concatenate([e for e in extra if e is not None]).astype(np.int64, copy=False)
    keep = (cols >= 0) & (cols < n_items)
    return rows[keep], cols[keep]


def top_k(
    model: ServingModel,
    users: Sequence[int],
    k: int,
    *,
    exclude_seen: bool = True,
    extra_seen: Sequence[np.ndarray | None] | None = None,
    max_cells: int = MAX_CELLS,
) -> list[TopK]:
    """Top ``k`` items for each of ``users`` (dense indices known to ``model``).

    With ``exclude_seen``, items in the model's seen CSR and in ``extra_seen``
    (one array per user, e.g. interactions logged since the model was trained)
    are left out, so a user may get fewer than ``k`` items. Users are scored in
    chunks of at most ``max_cells`` (user, item) scores."""
    user_idx = np.asarray(users, dtype=np.int64)
    if len(user_idx) == 0 or model.n_items == 0:
        return [TopK(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in user_idx]
    chunk = max(1, max_cells // model.n_items)
    results: list[TopK] = []
    for start in range(0, len(user_idx), chunk):
        part = user_idx[start : start + chunk]
        extra = extra_seen[start : start + chunk] if extra_seen is not None else None
        results.extend(_top_k_chunk(model, part, k, exclude_seen, extra))
    return results


def _top_k_chunk(
    model: ServingModel,
    users: np.ndarray,
    k: int,
    exclude_seen: bool,
    extra_seen: Sequence[np.ndarray | None] | None,
) -> list[TopK]:
    with torch.inference_mode():
        user_emb = model.user_emb.index_select(0, torch.from_numpy(users))  # (B, d)
        scores = torch.addmm(model.item_bias, user_emb, model.item_emb.T)  # (B, n_items)
        if exclude_seen:
            rows, cols = seen_pairs(model.seen_indptr, model.seen_items, users)
            if extra_seen is not None:
                more_rows, more_cols = extra_pairs(extra_seen, model.n_items)
                rows, cols = np.concatenate([rows, more_rows]), np.concatenate([cols, more_cols])
            if len(rows):
                scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
        top = torch.topk(scores, min(k, model.n_items), dim=1, sorted=True)
        values = top.values.numpy()  # (B, k)
        indices = top.indices.numpy()  # (B, k)
    finite = np.isfinite(values)
    return [TopK(indices[r][finite[r]], values[r][finite[r]]) for r in range(len(users))]


def rank_popular(
    popular: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> TopK:
    """The first ``k`` items of a popularity list (most popular first), skipping
    ``exclude``. Score: N - rank in the full list of N items, so it descends and
    does not depend on what a user has seen."""
    n = len(popular)
    scores = (n - np.arange(n)).astype(np.float32)  # (N,)
    if exclude is not None and len(exclude):
        keep = ~np.isin(popular, exclude)
        popular, scores = popular[keep], scores[keep]
    return TopK(popular[:k].astype(np.int64, copy=False), scores[:k])
