"""The merged model's rows: which rows go through the transfer, and the loss of a batch
scored with them (both steps of SML train through it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sml.fit import Batch
from sml.model import MFWeights, bce_loss
from sml.transfer import Transfer, TransferPair, column_scale

Scope = Literal["touched", "all"]


@dataclass(frozen=True)
class Side:
    """One table's inputs to the transfer: the previous rows, the fitted rows, which
    rows the transfer merges, and the columns' scale."""

    prev: Tensor  # (N, D) W_{t-1} rows (a new row's "previous" value: its initialisation)
    hat: Tensor  # (N, D) W-hat_t rows
    merged: Tensor  # (N,) bool: rows that go through f (the others keep prev)
    scale: Tensor  # (D,)

    @classmethod
    def of(cls, prev: Tensor, hat: Tensor, scope: Scope) -> Side:
        if scope == "all":
            merged = torch.ones(prev.shape[0], dtype=torch.bool, device=prev.device)
        else:
            merged = (hat != prev).any(dim=1)
        return cls(prev, hat, merged, column_scale(prev))

    def rows(self, transfer: Transfer, index: Tensor, hat: Tensor | None = None) -> Tensor:
        """Merged rows at ``index`` (K,) -> (K, D), with gradients to Theta (and to
        ``hat``, W-hat's rows at ``index``, when given)."""
        new = self.hat[index] if hat is None else hat
        if transfer.skippable():  # f(prev, new) = new; untouched rows have new == prev
            return new
        prev = self.prev[index]
        through = self.merged[index]
        if bool(through.all()):
            return transfer(prev, new, self.scale)  # (K, D)
        out = torch.where(through.unsqueeze(1), new, prev)  # (K, D)
        if bool(through.any()):
            at = through.nonzero().squeeze(1)
            out = out.index_put((at,), transfer(prev[at], new[at], self.scale))
        return out

    def table(self, transfer: Transfer, chunk: int = 4096) -> Tensor:
        """The whole merged table, without autograd: (N, D). A transfer that returns
        W-hat (as one never trained does) is not evaluated, trainable or not."""
        if transfer.is_identity():
            return self.hat.detach().clone()
        out = self.prev.clone()
        at = self.merged.nonzero().squeeze(1)
        with torch.no_grad():
            for s in range(0, at.shape[0], chunk):
                rows = at[s : s + chunk]
                out[rows] = transfer(self.prev[rows], self.hat[rows], self.scale)
        return out


def merged_loss(
    transfers: TransferPair,
    users: Side,
    items: Side,
    batch: Batch,
    hat: MFWeights | None = None,
) -> Tensor:
    """L_0 of the merged model on a batch, applying f to the batch's distinct rows only.

    With ``hat`` (W-hat being fitted, step 1) the gradient reaches its rows too.
    A user beyond the tables (first seen in the objective period) is scored as
    serving scores such a user: a zero row, so only the item biases rank for them.
    """
    b_users, pos, neg, weight = batch
    u_rows, u_inv = torch.unique(b_users, return_inverse=True)
    i_rows, i_inv = torch.unique(torch.cat([pos, neg.flatten()]), return_inverse=True)
    known = u_rows < users.prev.shape[0]
    u = torch.zeros(u_rows.shape[0], users.prev.shape[1], device=users.prev.device)  # (U, D)
    if bool(known.any()):
        rows = u_rows[known]
        fitted = None if hat is None else hat.user[rows]
        u = u.index_put((known.nonzero().squeeze(1),), users.rows(transfers.user, rows, fitted))
    fitted_items = None if hat is None else hat.item[i_rows]
    i = items.rows(transfers.item, i_rows, fitted_items)  # (I, D)
    b = b_users.shape[0]
    pos_rows = i[i_inv[:b]]  # (B, D)
    neg_rows = i[i_inv[b:]].view(b, neg.shape[1], -1)  # (B, n, D)
    return bce_loss(u[u_inv], pos_rows, neg_rows, weight)
