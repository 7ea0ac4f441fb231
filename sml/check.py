"""How SML's two lineages are compared on the period that just closed."""

from __future__ import annotations

import torch
from torch import Tensor

from sml.model import MFWeights

# the check: how the two lineages are compared on the period that just closed, as the
# protocol scores a model: is the interaction among the top CHECK_TOP of itself and
# CHECK_NEGATIVES sampled items the user has not interacted with?
CHECK_NEGATIVES = 99
CHECK_TOP = 20

Check = tuple[Tensor, Tensor, Tensor]  # users (B,), positives (B,), negatives (B, n)


def ranking_score(model: MFWeights, check: Check, chunk: int = 4096) -> float:
    """Share of the interactions the model ranks in the top CHECK_TOP of themselves and
    their sampled negatives (a tie with a negative counts half a place above it), i.e.
    sampled Recall@CHECK_TOP. Users beyond the tables score by item biases, as serving
    scores them. (A pairwise AUC would also reward moving positives up from the bottom
    of the list, which serving never shows, and adopt a Theta that ranks the top worse.)

    Scored ``chunk`` interactions at a time, so memory stays bounded however long the
    period; within a chunk, by the chunk's distinct users against the whole catalogue
    when that is the smaller product (a period's users recur), else by gathering each
    interaction's candidates."""
    users, pos, neg = check
    hits = 0.0
    with torch.no_grad():
        for s in range(0, users.shape[0], chunk):
            u_c, pos_c, neg_c = users[s : s + chunk], pos[s : s + chunk], neg[s : s + chunk]
            scores = candidate_scores(model, u_c, torch.cat([pos_c.unsqueeze(1), neg_c], 1))
            s_pos, s_neg = scores[:, :1], scores[:, 1:]  # (B, 1), (B, n)
            above = (s_neg > s_pos).double().sum(1) + 0.5 * (s_neg == s_pos).double().sum(1)
            hits += float((above < CHECK_TOP).double().sum())
    return hits / max(users.shape[0], 1)


def candidate_scores(model: MFWeights, users: Tensor, items: Tensor) -> Tensor:
    """Scores of users (B,) for their own candidate items (B, c): (B, c), user bias left
    out (it does not change a user's ranking), unknown users by item biases alone."""
    distinct, inverse = torch.unique(users, return_inverse=True)
    known = distinct < model.n_users
    emb = torch.zeros(distinct.shape[0], model.dim)  # (U, d)
    emb[known] = model.user[distinct[known], :-1]
    if distinct.shape[0] * model.n_items <= 5 * items.numel():
        table = emb @ model.item[:, :-1].T + model.item[:, -1]  # (U, n_items)
        return table[inverse.unsqueeze(1), items]
    rows = model.item[items]  # (B, c, d + 1)
    return torch.bmm(rows[..., :-1], emb[inverse].unsqueeze(2)).squeeze(2) + rows[..., -1]
