"""What every retraining strategy offers the replay and the worker.

A strategy consumes one period at a time and returns the model to serve next.
It keeps whatever it needs between periods (the previous model, Theta, a
reservoir...) and can write all of it to a state dict of tensors and plain
values, so a worker can checkpoint it and resume after a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sml.model import MFWeights


class PeriodLike(Protocol):
    """One period's interactions, as dense indices in time order."""

    @property
    def users(self) -> np.ndarray: ...  # (n,) int64

    @property
    def items(self) -> np.ndarray: ...  # (n,) int64

    @property
    def n_users(self) -> int: ...  # users known once this period is included

    @property
    def n_items(self) -> int: ...


@dataclass(frozen=True)
class PeriodData:
    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int


def concat_periods(periods: Sequence[PeriodLike]) -> PeriodData:
    """Several consecutive periods as one (for pretraining on a run of periods)."""
    return PeriodData(
        users=np.concatenate([p.users for p in periods]).astype(np.int64),
        items=np.concatenate([p.items for p in periods]).astype(np.int64),
        n_users=max(p.n_users for p in periods),
        n_items=max(p.n_items for p in periods),
    )


class Strategy(Protocol):
    name: str

    @property
    def model(self) -> MFWeights | None:
        """The model to serve now (None before the first period)."""
        ...

    @property
    def fitted(self) -> MFWeights | None:
        """What the last boundary fitted before merging it with the previous model (SML's
        W-hat_t), so the merge's own contribution can be measured; None for strategies
        that serve what they fit."""
        ...

    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        """Start from a model already trained on ``history`` (the replay's pretraining)."""
        ...

    def boundary(self, period: PeriodLike) -> MFWeights:
        """Period t has closed: train on it and return W_t, the model to serve next."""
        ...

    def set_update_transfer(self, enabled: bool) -> None:
        """Whether boundaries may still update learned merge parameters (SML-S turns it off)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
