"""Top-K within one category: the users scored against the category's rows of the
item table only (its sub-matrix, :meth:`engine.catalog.ItemView.matrix`), so a
request costs m x d multiply-adds per user for a category of m items instead of
the whole catalogue's n x d. The scores are the model's own,
U[u] . V[i] + b_i, so a category's answer is the unfiltered ranking restricted
to its items; seen items are masked as :func:`engine.scorer.top_k` masks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from engine.holder import ServingModel
from engine.scorer import MAX_CELLS, TopK, excluded_pairs

# A single request for a category of m items x d dims is scored where it arrives
# (the event loop) while m x d is at most this: tens of microseconds, less than
# the hop to a thread and back.
INLINE_CELLS = 1 << 21


class Within(NamedTuple):
    """A category to score within: its item indices (sorted) and their rows of
    the item table, (m, d), and biases, (m,)."""

    items: np.ndarray
    matrix: tuple[torch.Tensor, torch.Tensor]


def scored_inline(m: int, d: int) -> bool:
    """Whether one user's scores over a category of ``m`` items are cheap enough
    to compute without leaving the caller's thread."""
    return m * d <= INLINE_CELLS


def category_top_k(
    model: ServingModel,
    users: Sequence[int],
    k: int,
    items: np.ndarray,
    matrix: tuple[torch.Tensor, torch.Tensor],
    *,
    exclude_seen: bool = True,
    extra_seen: Sequence[np.ndarray | None] | None = None,
    max_cells: int = MAX_CELLS,
) -> list[TopK]:
    """Top ``k`` of ``items`` (sorted item indices; ``matrix``: their embeddings
    (m, d) and biases (m,)) for each of ``users``, seen items left out as in
    :func:`engine.scorer.top_k` (so a user may get fewer than ``k``)."""
    user_idx = np.asarray(users, dtype=np.int64)
    m = len(items)
    if m == 0 or len(user_idx) == 0:
        return [TopK(np.empty(0, np.int64), np.empty(0, np.float32)) for _ in user_idx]
    emb, bias = matrix
    k = min(k, m)
    if len(user_idx) == 1:  # one request, scored where it arrives
        return [_one(model, int(user_idx[0]), k, items, matrix, exclude_seen, extra_seen)]
    chunk = max(1, max_cells // m)
    results: list[TopK] = []
    for start in range(0, len(user_idx), chunk):
        part = user_idx[start : start + chunk]
        extra = extra_seen[start : start + chunk] if extra_seen is not None else None
        rows, cols = excluded_pairs(model, part, exclude_seen, extra)
        at, inside = _places(items, cols)
        with torch.inference_mode():
            user_emb = model.user_emb.index_select(0, torch.from_numpy(part))  # (B, d)
            scores = torch.addmm(bias, user_emb, emb.T)  # (B, m)
            if inside.any():
                scores[torch.from_numpy(rows[inside]), torch.from_numpy(at[inside])] = (
                    -torch.inf)
            top = torch.topk(scores, k, dim=1, sorted=True)
        values, positions = top.values.numpy(), top.indices.numpy()  # (B, k) each
        finite = np.isfinite(values)
        results.extend(TopK(items[positions[r][finite[r]]], values[r][finite[r]])
                       for r in range(len(part)))
    return results


def _one(model: ServingModel, user: int, k: int, items: np.ndarray,
         matrix: tuple[torch.Tensor, torch.Tensor], exclude_seen: bool,
         extra_seen: Sequence[np.ndarray | None] | None) -> TopK:
    """:func:`category_top_k` for one user (``k`` <= m): a matrix-vector product and a
    1-D top-k on the user's row, without the batch's gather and 2-D indexing, which
    cost a single request a fifth to a third of its time (50-17,000 items)."""
    emb, bias = matrix
    _, cols = excluded_pairs(model, np.array([user], dtype=np.int64), exclude_seen, extra_seen)
    at, inside = _places(items, cols)
    masked = at[inside]  # positions in items of the pairs to leave out
    with torch.inference_mode():
        scores = torch.mv(emb, model.user_emb[user]).add_(bias)  # (m,)
        if len(masked):
            scores[torch.from_numpy(masked)] = -torch.inf
        top = torch.topk(scores, k, sorted=True)
    values, positions = top.values.numpy(), top.indices.numpy()  # (k,) each
    finite = np.isfinite(values)
    return TopK(items[positions[finite]], values[finite])


def _places(items: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each excluded item's place in ``items`` (sorted), and whether it is there."""
    at = np.minimum(np.searchsorted(items, cols), len(items) - 1)
    return at, items[at] == cols
