"""Helpers of the engine's tests: model artifact payloads with random weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def random_payload(n_users: int, n_items: int, dim: int, seen: Sequence[Sequence[int]], *,
                   seed: int = 0, version: int = 1, period_id: int = 1,
                   popular: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """A model artifact payload ("smlrec-model/1") with random weights (user
    table, then item table, from ``seed``), users u0, u1, ... and items i0,
    i1, ..., and ``seen[u]``: the item indices user u has seen."""
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seen])])
    generator = torch.Generator().manual_seed(seed)
    return {
        "format": "smlrec-model/1", "version": version, "period_id": period_id,
        "strategy": "sml", "created_at": 0.0,
        "user": torch.randn(n_users, dim + 1, generator=generator),
        "item": torch.randn(n_items, dim + 1, generator=generator),
        "user_ids": [f"u{n}" for n in range(n_users)],
        "item_ids": [f"i{n}" for n in range(n_items)],
        "seen_indptr": torch.tensor(indptr, dtype=torch.int64),
        "seen_items": torch.tensor([i for s in seen for i in s], dtype=torch.int64),
        "popular": torch.tensor(list(popular), dtype=torch.int64),
    }
