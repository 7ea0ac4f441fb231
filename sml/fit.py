"""Training data for one period and the plain MF fitting loop every strategy shares.

Negatives are sampled from the catalog known so far, excluding the items the
user has interacted with so far, never from evaluation candidates (docs/protocol.md,
"No peeking").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from sml.model import MFWeights, bce_loss

_SHIFT = np.int64(1 << 32)


class SeenPairs:
    """The (user, item) pairs observed so far, as a sorted array of packed keys.

    Membership, which every negative drawn asks about, is also answered from a bitmap
    of users x items (a bit per pair, rows padded for growth) while that fits in
    ``DENSE_LIMIT_BITS``: one read a query instead of a binary search over the whole
    history (30 times faster on MovieLens-100K's 100,000 pairs). The keys stay the
    record (checkpoints, sampling); the bitmap is rebuilt from them when the tables
    outgrow it or users are removed. Larger catalogues search the keys.
    """

    DENSE_LIMIT_BITS = 1 << 29  # 64 MiB

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self.keys = np.zeros(0, dtype=np.int64) if keys is None else np.asarray(keys, np.int64)
        self._bits: np.ndarray | None = None  # (users_cap * row_bytes,) uint8
        self._cap = (0, 0)  # users, items the bitmap has room for
        self._row_bytes = 0  # one user's row: items_cap bits, rounded up to bytes

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        """Insert pairs; costs one pass over the keys, not a sort of them (history grows,
        a period does not)."""
        new = np.unique(users.astype(np.int64) * _SHIFT + items.astype(np.int64))
        new = new[~self._has(new)]
        self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)
        if self._bits is not None:
            if new.size and (new[-1] // _SHIFT >= self._cap[0]
                             or (new % _SHIFT).max() >= self._cap[1]):
                self._bits = None  # outgrown: rebuilt at the next query
            else:
                self._mark(new)

    def remove_users(self, users: np.ndarray) -> None:
        """Drop every pair of ``users`` (their data was deleted)."""
        if len(self.keys):
            self.keys = self.keys[~np.isin(self.keys // _SHIFT, users)]
            self._bits = None

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pairs drawn uniformly with replacement: (users (n,), items (n,)) int64."""
        keys = self.keys[rng.integers(0, len(self.keys), size=n)]
        return keys // _SHIFT, keys % _SHIFT

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = users.astype(np.int64), items.astype(np.int64)
        if self._dense():
            return self._in_bitmap(users, items)
        return self._searched(users * _SHIFT + items)

    def _has(self, query: np.ndarray) -> np.ndarray:
        if self._dense():
            return self._in_bitmap(query // _SHIFT, query % _SHIFT)
        return self._searched(query)

    def _searched(self, query: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(query.shape, dtype=bool)
        pos = np.searchsorted(self.keys, query).clip(max=len(self.keys) - 1)
        return self.keys[pos] == query

    def _dense(self) -> bool:
        """Whether the bitmap answers (building it if it fits and is missing)."""
        if self._bits is not None:
            return True
        if len(self.keys) == 0:
            return False
        # room for a quarter more users and items than the keys hold, so that a
        # period's arrivals rarely force a rebuild
        n_users = int(self.keys[-1] // _SHIFT) + 1
        n_items = int((self.keys % _SHIFT).max()) + 1
        cap = (n_users + n_users // 4 + 64, n_items + n_items // 4 + 64)
        row_bytes = (cap[1] + 7) // 8
        if cap[0] * row_bytes * 8 > self.DENSE_LIMIT_BITS:
            return False
        self._cap, self._row_bytes = cap, row_bytes
        self._bits = np.zeros(cap[0] * row_bytes, dtype=np.uint8)
        self._mark(self.keys)
        return True

    def _mark(self, keys: np.ndarray) -> None:
        assert self._bits is not None
        users, items = keys // _SHIFT, keys % _SHIFT
        bit = np.left_shift(1, items & 7).astype(np.uint8)
        np.bitwise_or.at(self._bits, users * self._row_bytes + (items >> 3), bit)

    def _in_bitmap(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        assert self._bits is not None
        inside = (users < self._cap[0]) & (items < self._cap[1])
        u, i = np.where(inside, users, 0), np.where(inside, items, 0)
        byte = self._bits[u * self._row_bytes + (i >> 3)]
        return inside & ((byte >> (i & 7).astype(np.uint8)) & 1).astype(bool)


def sample_negatives(
    users: np.ndarray,
    n_negatives: int,
    n_items: int,
    seen: SeenPairs,
    rng: np.random.Generator,
    max_tries: int = 8,
) -> np.ndarray:
    """Uniform items in [0, n_items) the user has not interacted with: (B, n_negatives).

    Rejection sampling; after max_tries a rare leftover collision is kept (heavy
    users of a tiny catalog), which costs nothing measurable.
    """
    rows = np.repeat(users, n_negatives)
    neg = rng.integers(0, n_items, size=rows.shape[0])
    for _ in range(max_tries):
        bad = np.flatnonzero(seen.contains(rows, neg))
        if bad.size == 0:
            break
        neg[bad] = rng.integers(0, n_items, size=bad.size)
    return neg.reshape(-1, n_negatives)


class Batch(NamedTuple):
    users: Tensor  # (B,)
    pos: Tensor  # (B,)
    neg: Tensor  # (B, n)
    weight: Tensor | None = None  # (B,) float32, each interaction's; None: all 1


def batches(
    users: np.ndarray,
    items: np.ndarray,
    *,
    n_items: int,
    seen: SeenPairs,
    n_negatives: int,
    batch_size: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    device: str = "cpu",
) -> Iterator[Batch]:
    """One epoch: shuffled positives with freshly sampled negatives (and each one's
    weight, given ``weights``: the same shuffle and draws either way), drawn on the
    CPU and moved to ``device``."""
    order = rng.permutation(users.shape[0])
    neg = sample_negatives(users[order], n_negatives, n_items, seen, rng)
    w32 = None if weights is None else np.asarray(weights, dtype=np.float32)
    for start in range(0, order.shape[0], batch_size):
        idx = order[start : start + batch_size]
        yield Batch(
            torch.from_numpy(users[idx]).to(device),  # the same tensor on the CPU
            torch.from_numpy(items[idx]).to(device),
            torch.from_numpy(neg[start : start + batch_size]).to(device),
            None if w32 is None else torch.from_numpy(w32[idx]).to(device),
        )


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    lr: float = 0.01
    l2: float = 1e-4  # lambda_1
    n_negatives: int = 4
    batch_size: int = 1024
    # Adam on the rows a batch touches only (per-row step counts; the others keep
    # their values and moments): a step then costs the batch, not the tables
    rows_only: bool = False
    device: str = "cpu"  # where the fit runs (sml.device); its result is on the CPU


# more pairs for one epoch, drawn anew at each (users (n,), items (n,))
Draw = Callable[[], tuple[np.ndarray, np.ndarray]]


def epoch_pairs(users: np.ndarray, items: np.ndarray, weights: np.ndarray | None,
                extra: Draw | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An epoch's pairs: the given ones, after ``extra``'s draw for this epoch (weight 1)."""
    if extra is None:
        return users, items, weights
    more_users, more_items = extra()
    if weights is not None:
        weights = np.concatenate([np.ones(len(more_users), weights.dtype), weights])
    return (np.concatenate([more_users, users]), np.concatenate([more_items, items]), weights)


def mf_batch_loss(weights: MFWeights, batch: Batch, l2: float) -> Tensor:
    users, pos, neg, weight = batch
    u, p, n = weights.user[users], weights.item[pos], weights.item[neg]  # (B, D), (B, D), (B, n, D)
    reg = (u.square().sum() + p.square().sum() + n.square().sum()) / users.shape[0]
    return bce_loss(u, p, n, weight) + l2 * reg


def run_epochs(
    params: Sequence[Tensor],
    loss_of: Callable[[Batch], Tensor],
    users: np.ndarray,
    items: np.ndarray,
    *,
    n_items: int,
    seen: SeenPairs,
    config: FitConfig,
    rng: np.random.Generator,
    optimizer: torch.optim.Optimizer | None = None,
    weights: np.ndarray | None = None,
    extra: Draw | None = None,
) -> float:
    """Adam over ``params`` for some epochs of a period; returns the last epoch's mean loss.

    A long-lived ``optimizer`` (Theta's, kept across periods) may be passed in;
    otherwise a fresh Adam with ``config.lr`` is used. ``weights`` (N,): each
    interaction's weight in the loss (None: every one 1). Weights that are all 1
    train as no weights do, exactly (the weighted loss's backward may sum a
    gradient in another order). ``extra`` adds its own draw of pairs to each epoch.
    """
    if users.shape[0] == 0:
        return float("nan")
    if weights is not None and bool(np.all(weights == 1)):
        weights = None
    if optimizer is None:
        optimizer = torch.optim.Adam(params, lr=config.lr)
    mean = float("nan")
    for _ in range(config.epochs):
        total, count = 0.0, 0
        epoch_users, epoch_items, epoch_weights = epoch_pairs(users, items, weights, extra)
        for batch in batches(
            epoch_users,
            epoch_items,
            n_items=n_items,
            seen=seen,
            n_negatives=config.n_negatives,
            batch_size=config.batch_size,
            rng=rng,
            weights=epoch_weights,
            device=config.device,
        ):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(batch)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch[0].shape[0]
            count += batch[0].shape[0]
        mean = total / count
    return mean


def fit_mf(
    start: MFWeights,
    users: np.ndarray,
    items: np.ndarray,
    *,
    seen: SeenPairs,
    config: FitConfig,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    extra: Draw | None = None,
) -> MFWeights:
    """Plain MF training on (users, items) from ``start`` (which must cover every index);
    ``weights``: each interaction's weight in the loss (None: every one 1); ``extra``:
    more pairs drawn anew for each epoch. It runs on ``config.device`` and returns CPU
    tensors."""
    if config.rows_only:
        return _fit_rows(start, users, items, seen=seen, config=config, rng=rng,
                         weights=weights, extra=extra)
    model = start.trainable(config.device)
    run_epochs(
        [model.user, model.item],
        lambda batch: mf_batch_loss(model, batch, config.l2),
        users,
        items,
        n_items=model.n_items,
        seen=seen,
        config=config,
        rng=rng,
        weights=weights,
        extra=extra,
    )
    return model.detach().to("cpu")


class _RowAdam:
    """Adam's moments for one table, applied to the rows a step touches only, each
    row with its own step count for the bias correction."""

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, table: Tensor, lr: float) -> None:
        self.table, self.lr = table, lr
        self.first = torch.zeros_like(table)  # (rows, D)
        self.second = torch.zeros_like(table)  # (rows, D)
        self.steps = torch.zeros(table.shape[0], 1, device=table.device)  # (rows, 1)

    def step(self, rows: Tensor, grad: Tensor) -> None:
        """One Adam step on ``rows`` (unique) with their gradients (len(rows), D)."""
        b1, b2 = self.BETAS
        steps = self.steps[rows] + 1  # (R, 1)
        first = self.first[rows].mul_(b1).add_(grad, alpha=1 - b1)
        second = self.second[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.steps[rows], self.first[rows], self.second[rows] = steps, first, second
        update = (first / (1 - b1**steps)) / ((second / (1 - b2**steps)).sqrt() + self.EPS)
        self.table[rows] -= self.lr * update


def _fit_rows(
    start: MFWeights,
    users: np.ndarray,
    items: np.ndarray,
    *,
    seen: SeenPairs,
    config: FitConfig,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    extra: Draw | None = None,
) -> MFWeights:
    """:func:`fit_mf` with ``rows_only``: each batch's loss on copies of the rows it
    touches, and Adam on those rows alone (the loss is the same function)."""
    model = start.detach().to(config.device)  # a copy
    if users.shape[0] == 0:
        return model.to("cpu")
    if weights is not None and bool(np.all(weights == 1)):
        weights = None
    user_adam, item_adam = _RowAdam(model.user, config.lr), _RowAdam(model.item, config.lr)
    for _ in range(config.epochs):
        epoch_users, epoch_items, epoch_weights = epoch_pairs(users, items, weights, extra)
        for b_users, pos, neg, weight in batches(
            epoch_users, epoch_items, n_items=model.n_items, seen=seen,
            n_negatives=config.n_negatives, batch_size=config.batch_size, rng=rng,
            weights=epoch_weights, device=config.device,
        ):
            user_rows, local_users = torch.unique(b_users, return_inverse=True)
            item_rows, local_items = torch.unique(torch.cat([pos, neg.reshape(-1)]),
                                                  return_inverse=True)
            part = MFWeights(model.user[user_rows].requires_grad_(True),
                             model.item[item_rows].requires_grad_(True))
            local = Batch(local_users, local_items[: len(pos)],
                          local_items[len(pos):].reshape(neg.shape), weight)
            mf_batch_loss(part, local, config.l2).backward()
            assert part.user.grad is not None and part.item.grad is not None
            with torch.no_grad():
                user_adam.step(user_rows, part.user.grad)
                item_adam.step(item_rows, part.item.grad)
    return model.to("cpu")
