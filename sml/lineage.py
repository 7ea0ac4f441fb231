"""One chain of SML's merged models with the transfer that builds it (the strategy keeps
two: the served lineage and the learner)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sml.device import to_cpu
from sml.model import MFWeights
from sml.transfer import TransferPair


@dataclass
class Lineage:
    """One chain of merged models and the transfer that builds it."""

    transfers: TransferPair
    optimizer: torch.optim.Adam  # Theta's
    current: MFWeights | None = None  # W_{t-1}: what this lineage serves during period t
    anchor: MFWeights | None = None  # W_{t-2}, grown: what W_{t-1} was merged from
    hat: MFWeights | None = None  # W-hat_{t-1}

    def copy(self) -> Lineage:
        """An independent copy (weights are never changed in place, so they are shared)."""
        transfers = copy.deepcopy(self.transfers)
        optimizer = torch.optim.Adam(transfers.parameters(), lr=_lr(self.optimizer))
        optimizer.load_state_dict(self.optimizer.state_dict())
        return Lineage(transfers, optimizer, self.current, self.anchor, self.hat)

    def forget_users(self, users: np.ndarray) -> None:
        """Zero the rows of ``users`` (their data was deleted) in every model held."""
        self.current, self.anchor, self.hat = (
            None if w is None else w.without_users(users)
            for w in (self.current, self.anchor, self.hat))

    def state_dict(self) -> dict[str, Any]:
        def weights(w: MFWeights | None) -> dict[str, Tensor] | None:
            return None if w is None else w.state_dict()

        return {
            "current": weights(self.current),
            "anchor": weights(self.anchor),
            "hat": weights(self.hat),
            # CPU copies: a snapshot, never a view of live training tensors, and loadable
            # where there is no GPU
            "theta": to_cpu(self.transfers.state_dict()),
            "theta_optimizer": to_cpu(self.optimizer.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def weights(d: dict[str, Tensor] | None) -> MFWeights | None:
            return None if d is None else MFWeights.from_state_dict(d)

        self.current, self.anchor, self.hat = (
            weights(state["current"]),
            weights(state["anchor"]),
            weights(state["hat"]),
        )
        self.transfers.load_state_dict(state["theta"])
        self.optimizer.load_state_dict(state["theta_optimizer"])


def _lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
