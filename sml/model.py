"""Matrix factorisation with user and item biases, the base model of every strategy.

score(u, i) = <p_u, q_i> + b_u + b_i. The loss is the SML paper's L_0: binary
cross-entropy on observed pairs and on sampled pairs the user has not interacted
with, plus lambda * L2 of the rows involved; an interaction may weigh more or
less than 1 in it (its type and weight, where the log records them).

The weights live in two plain tensors rather than in an ``nn.Module`` so that the
transfer can take them as inputs and the meta-gradient can flow through them.
Each row is the embedding followed by the bias: a transfer sees the bias as one
more dimension, which lets it carry popularity across periods too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class MFConfig:
    dim: int = 64
    init_std: float = 0.01


@dataclass
class MFWeights:
    user: Tensor  # (n_users, dim + 1): embedding, then bias
    item: Tensor  # (n_items, dim + 1)

    @property
    def dim(self) -> int:
        return self.user.shape[1] - 1

    @property
    def n_users(self) -> int:
        return self.user.shape[0]

    @property
    def n_items(self) -> int:
        return self.item.shape[0]

    @classmethod
    def init(
        cls, config: MFConfig, n_users: int, n_items: int, generator: torch.Generator
    ) -> MFWeights:
        return cls(
            user=new_rows(n_users, config, generator),
            item=new_rows(n_items, config, generator),
        )

    def without_users(self, users: np.ndarray) -> MFWeights:
        """A copy with the rows of ``users`` zeroed (their data was deleted); indices
        beyond the table are ignored. ``self`` when none is in it."""
        rows = users[users < self.n_users]
        if rows.size == 0:
            return self
        user = self.user.detach().clone()
        user[torch.from_numpy(rows.astype(np.int64))] = 0.0
        return MFWeights(user, self.item)

    def detach(self) -> MFWeights:
        return MFWeights(self.user.detach().clone(), self.item.detach().clone())

    def to(self, device: str) -> MFWeights:
        """These tables on ``device`` (the same tensors where they are there already)."""
        return MFWeights(self.user.to(device), self.item.to(device))

    def trainable(self, device: str) -> MFWeights:
        """A copy on ``device`` whose tables require gradients: what a fit trains."""
        return MFWeights(self.user.detach().to(device, copy=True).requires_grad_(True),
                         self.item.detach().to(device, copy=True).requires_grad_(True))

    def grow(
        self, n_users: int, n_items: int, config: MFConfig, generator: torch.Generator
    ) -> MFWeights:
        """Append freshly initialised rows for users and items first seen now."""
        user, item = self.user.detach(), self.item.detach()
        if n_users > self.n_users:
            user = torch.cat([user, new_rows(n_users - self.n_users, config, generator)])
        if n_items > self.n_items:
            item = torch.cat([item, new_rows(n_items - self.n_items, config, generator)])
        return MFWeights(user.clone(), item.clone())

    def state_dict(self) -> dict[str, Tensor]:
        return {"user": self.user.detach().contiguous(), "item": self.item.detach().contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> MFWeights:
        return cls(state["user"], state["item"])


def new_rows(n: int, config: MFConfig, generator: torch.Generator) -> Tensor:
    """Initial value of rows never trained: small Gaussian embedding, zero bias."""
    rows = torch.randn(n, config.dim + 1, generator=generator) * config.init_std
    rows[:, -1] = 0.0
    return rows  # (n, dim + 1)


def logits(user_rows: Tensor, item_rows: Tensor) -> Tensor:
    """Scores of aligned (user, item) rows: (B, d+1), (B, d+1) -> (B,)."""
    dot = (user_rows[..., :-1] * item_rows[..., :-1]).sum(-1)
    return dot + user_rows[..., -1] + item_rows[..., -1]


def bce_loss(
    user_rows: Tensor, pos_rows: Tensor, neg_rows: Tensor, weight: Tensor | None = None
) -> Tensor:
    """L_0 on a batch: users (B, d+1), positives (B, d+1), negatives (B, n, d+1),
    averaged over the B interactions. ``weight`` (B,) multiplies each interaction's
    term (its positive and its negatives); None weighs every one 1, and weights of
    1 give exactly the unweighted loss (each term times 1, summed in the same order)."""
    pos = logits(user_rows, pos_rows)  # (B,)
    neg = logits(user_rows.unsqueeze(1), neg_rows)  # (B, n)
    neg_weight = None if weight is None else weight.unsqueeze(1)  # (B, 1)
    loss_pos = F.binary_cross_entropy_with_logits(
        pos, torch.ones_like(pos), weight=weight, reduction="sum")
    loss_neg = F.binary_cross_entropy_with_logits(
        neg, torch.zeros_like(neg), weight=neg_weight, reduction="sum")
    return (loss_pos + loss_neg) / pos.shape[0]


def score_all(weights: MFWeights, users: Tensor, n_catalog: int | None = None) -> Tensor:
    """Scores of users (B,) against every item: (B, n_catalog).

    The user bias is left out (it does not change a user's ranking). A user the
    model does not know gets the item biases alone, i.e. a popularity ranking;
    items beyond the model's table (unknown to it) score -inf.
    """
    n_catalog = weights.n_items if n_catalog is None else n_catalog
    item = weights.item
    known = users < weights.n_users
    user_emb = torch.zeros(users.shape[0], weights.dim, dtype=item.dtype)  # (B, d)
    user_emb[known] = weights.user[users[known], :-1]
    scores = user_emb @ item[:, :-1].T + item[:, -1]  # (B, n_items)
    if n_catalog > weights.n_items:
        pad = torch.full((users.shape[0], n_catalog - weights.n_items), -torch.inf)
        scores = torch.cat([scores, pad], dim=1)
    return scores[:, :n_catalog]


def numpy_scorer(weights: MFWeights, n_catalog: int) -> Callable[[np.ndarray], np.ndarray]:
    """Adapter to the metrics' scorer signature: user indices -> (B, n_catalog) array."""

    def score(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return score_all(weights, torch.as_tensor(users), n_catalog).numpy()

    return score
