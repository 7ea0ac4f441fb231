"""The protocol's metrics: sampled and full-ranking Recall/NDCG, per period and aggregated.

Sampled metrics follow the NCF protocol: each interaction (u, i) is ranked among i and
99 items drawn once, with a fixed seed, from the items u never interacts with anywhere
in the data set (`Candidates`). Full-ranking metrics rank i against the whole catalog
minus the items u interacted with before the evaluated period. Ties are split
half-and-half, so a scorer that outputs constants earns nothing. `paired_bootstrap`
puts an interval on the difference between two methods, resampling users.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sml.candidates import ELEMENT_BUDGET, Candidates
from sml.data import InteractionLog, Period

logger = logging.getLogger(__name__)

KS: tuple[int, ...] = (5, 10, 20)
FULL_K = 20
METRIC_KEYS: tuple[str, ...] = (
    *(f"recall@{k}" for k in KS),
    *(f"ndcg@{k}" for k in KS),
    f"full_recall@{FULL_K}",
    f"full_ndcg@{FULL_K}",
)
Group = Literal["all", "returning", "first_seen"]

Scorer = Callable[[np.ndarray], np.ndarray]
"""Dense user indices (B,) -> scores (B, n_catalog) for every item index of the log.

Items the model does not know must already be scored -inf; NaN is read as -inf.
"""


def ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 among the columns of `scores` (B, C) -> (B,) float64.

    rank = #others with a strictly greater score + 0.5 * #others with an equal score;
    NaN counts as -inf, and -inf ties with -inf.
    """
    s = _sanitize(np.asarray(scores))
    if s.ndim != 2 or s.shape[1] < 1:
        raise ValueError(f"scores must be (B, C) with C >= 1, got shape {s.shape}")
    positive = s[:, :1]  # (B, 1)
    others = s[:, 1:]  # (B, C - 1)
    greater = np.count_nonzero(others > positive, axis=1)
    equal = np.count_nonzero(others == positive, axis=1)
    return greater + 0.5 * equal


def recall_ndcg(rank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: recall = 1 if rank < k else 0; ndcg = 1 / log2(rank + 2) if rank < k else 0."""
    r = np.asarray(rank, dtype=np.float64)
    hit = r < k
    recall = hit.astype(np.float64)
    ndcg = np.zeros_like(r)
    ndcg[hit] = 1.0 / np.log2(r[hit] + 2.0)
    return recall, ndcg


@dataclass
class PeriodEvaluation:
    """Per-interaction metric values of one evaluated period."""

    period: int
    values: dict[str, np.ndarray]  # METRIC_KEYS -> (n,) float64, one per row of the period
    returning: np.ndarray  # (n,) bool: the user has a row before the period starts

    def __len__(self) -> int:
        return int(self.returning.shape[0])

    def mean(self) -> dict[str, float]:
        """The period's figures: the mean over its interactions (NaN if it has none)."""
        return {key: _mean(self.values[key]) for key in METRIC_KEYS}


def evaluate_period(
    scorer: Scorer,
    log: InteractionLog,
    period: Period,
    candidates: Candidates,
    *,
    batch_users: int = 1024,
) -> PeriodEvaluation:
    """Score every interaction of `period` with `scorer`, sampled and full ranking.

    The scorer is called once per chunk of at most `batch_users` distinct users of the
    period. Full ranking excludes, per user, the items of log rows before
    `period.start`, except the positive itself.
    """
    if batch_users < 1:
        raise ValueError(f"batch_users must be >= 1, got {batch_users}")
    n_items = log.n_items
    p_users = np.asarray(period.users, dtype=np.int64)
    p_items = np.asarray(period.items, dtype=np.int64)
    n = len(p_users)
    if n != period.stop - period.start or len(p_items) != n:
        raise ValueError(f"period {period.index} has inconsistent row arrays")
    cand = candidates.for_rows(period.start, period.stop)  # (n, C)

    returning = _returning(log, period.start, p_users)

    values = {key: np.empty(n, dtype=np.float64) for key in METRIC_KEYS}
    if n == 0:
        return PeriodEvaluation(period=period.index, values=values, returning=returning)

    # Distinct users of the period and, for each of them, a chunk-local position.
    distinct, user_code = np.unique(p_users, return_inverse=True)  # code: index in distinct
    row_order = np.argsort(user_code, kind="stable")
    row_bounds = np.searchsorted(user_code[row_order], np.arange(0, len(distinct), batch_users))
    row_bounds = np.append(row_bounds, n)

    prev_code, prev_items, prev_bounds = _earlier_rows(log, period.start, distinct, batch_users)

    for chunk, lo in enumerate(range(0, len(distinct), batch_users)):
        chunk_users = distinct[lo : lo + batch_users]
        scores = _chunk_scores(scorer, chunk_users, n_items)  # (b, n_items)
        seen = np.zeros((len(chunk_users), n_items), dtype=bool)  # (b, n_items)
        p_lo, p_hi = prev_bounds[chunk], prev_bounds[chunk + 1]
        seen[prev_code[p_lo:p_hi] - lo, prev_items[p_lo:p_hi]] = True
        rows = row_order[row_bounds[chunk] : row_bounds[chunk + 1]]  # period-local rows
        local = user_code[rows] - lo  # (R,) row of `scores` for each period row
        _record(values, rows, ranks(scores[local[:, None], cand[rows]]),
                _full_ranks(scores, seen, local, p_items[rows]))

    logger.debug(
        "period %d: %d interactions, %d users, %.1f%% returning",
        period.index,
        n,
        len(distinct),
        100.0 * float(returning.mean()),
    )
    return PeriodEvaluation(period=period.index, values=values, returning=returning)


def _chunk_scores(scorer: Scorer, users: np.ndarray, n_items: int) -> np.ndarray:
    """The scorer's (b, n_items) scores of ``users``, NaN made -inf; its shape checked."""
    scores = _sanitize(np.asarray(scorer(users)))
    if scores.shape != (len(users), n_items):
        expected = (len(users), n_items)
        raise ValueError(f"scorer returned shape {scores.shape}, expected {expected}")
    return scores


def _record(values: dict[str, np.ndarray], rows: np.ndarray, sampled: np.ndarray,
            full: np.ndarray) -> None:
    """Each metric of the period's ``rows`` from their sampled and full ranks (R,)."""
    for k in KS:
        values[f"recall@{k}"][rows], values[f"ndcg@{k}"][rows] = recall_ndcg(sampled, k)
    (
        values[f"full_recall@{FULL_K}"][rows],
        values[f"full_ndcg@{FULL_K}"][rows],
    ) = recall_ndcg(full, FULL_K)


def _returning(log: InteractionLog, start: int, users: np.ndarray) -> np.ndarray:
    """(n,) bool: whether each of ``users`` has a log row before row ``start``."""
    all_users = np.asarray(log.users, dtype=np.int64)
    first_row = np.full(log.n_users, len(all_users), dtype=np.int64)
    np.minimum.at(first_row, all_users, np.arange(len(all_users), dtype=np.int64))
    return first_row[users] < start


def _earlier_rows(
    log: InteractionLog, start: int, distinct: np.ndarray, batch_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log rows before ``start`` of the ``distinct`` (sorted) users, for the
    full-ranking exclusion: each row's user code (its index in ``distinct``) and item,
    ordered by code, and where each chunk of ``batch_users`` codes begins."""
    prev_users = np.asarray(log.users, dtype=np.int64)[:start]
    prev_items = np.asarray(log.items, dtype=np.int64)[:start]
    pos = np.minimum(np.searchsorted(distinct, prev_users), len(distinct) - 1)
    known = distinct[pos] == prev_users
    prev_code, prev_items = pos[known], prev_items[known]
    order = np.argsort(prev_code, kind="stable")
    prev_code, prev_items = prev_code[order], prev_items[order]
    bounds = np.searchsorted(prev_code, np.arange(0, len(distinct) + batch_users, batch_users))
    return prev_code, prev_items, bounds


def aggregate(evals: Sequence[PeriodEvaluation], group: Group = "all") -> dict[str, float]:
    """Mean over all interactions of `evals` (periods weighted by size) within `group`.

    Adds "share", the fraction of the periods' interactions in the group (1.0 for
    "all"), and "n", their count. An empty group gives NaN metric values.
    """
    if group not in ("all", "returning", "first_seen"):
        raise ValueError(f"unknown group {group!r}")
    total = sum(len(e) for e in evals)
    returning = np.concatenate([e.returning for e in evals]) if evals else np.zeros(0, dtype=bool)
    if group == "all":
        mask = np.ones_like(returning)
    elif group == "returning":
        mask = returning
    else:
        mask = ~returning
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        column = np.concatenate([e.values[key] for e in evals]) if evals else np.zeros(0)
        out[key] = _mean(column[mask])
    count = int(np.count_nonzero(mask))
    if group == "all":
        out["share"] = 1.0
    else:
        out["share"] = count / total if total else math.nan
    out["n"] = count
    return out


def relative_improvement(sml: float, other: float) -> float:
    """The paper's RI of SML over another method: (sml - other) / other; NaN if other == 0."""
    if other == 0:
        return math.nan
    return (sml - other) / other


def _full_ranks(
    scores: np.ndarray, seen: np.ndarray, local: np.ndarray, positives: np.ndarray
) -> np.ndarray:
    """Rank of each positive against every catalog item its user had not seen before.

    scores, seen: (b, n_items); local, positives: (R,) -> (R,) float64.
    """
    n_items = scores.shape[1]
    out = np.empty(len(local), dtype=np.float64)
    step = max(1, ELEMENT_BUDGET // max(1, n_items))
    for lo in range(0, len(local), step):
        rows, items = local[lo : lo + step], positives[lo : lo + step]
        arange = np.arange(len(rows))
        block = scores[rows]  # (Rb, n_items)
        positive = block[arange, items][:, None]  # (Rb, 1)
        others = ~seen[rows]  # (Rb, n_items)
        others[arange, items] = False
        greater = np.count_nonzero((block > positive) & others, axis=1)
        equal = np.count_nonzero((block == positive) & others, axis=1)
        out[lo : lo + step] = greater + 0.5 * equal
    return out


def _sanitize(scores: np.ndarray) -> np.ndarray:
    """Float scores with NaN replaced by -inf (copies only when needed)."""
    if not np.issubdtype(scores.dtype, np.floating):
        return scores.astype(np.float64)
    nan = np.isnan(scores)
    if nan.any():
        scores = np.where(nan, -np.inf, scores)
    return scores


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan
