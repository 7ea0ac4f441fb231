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
import torch

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
    # (n,) each interaction's weight in the training loss; None: every one 1 (the
    # offline replay's logs, and a service log whose weights are all 1)
    weights: np.ndarray | None = None


def weights_of(period: PeriodLike) -> np.ndarray | None:
    """A period's interaction weights, where it has them (a replay's periods do not)."""
    weights: np.ndarray | None = getattr(period, "weights", None)
    return weights


def as_period_data(period: PeriodLike) -> PeriodData:
    return PeriodData(period.users, period.items, period.n_users, period.n_items,
                      weights_of(period))


def without_users(period: PeriodData | None, users: np.ndarray) -> PeriodData | None:
    """``period`` less the interactions of ``users`` (their data was deleted)."""
    if period is None or len(users) == 0:
        return period
    keep = ~np.isin(period.users, users)
    return PeriodData(period.users[keep], period.items[keep], period.n_users, period.n_items,
                      None if period.weights is None else period.weights[keep])


def join_weights(parts: Sequence[tuple[int, np.ndarray | None]]) -> np.ndarray | None:
    """The weights of consecutive runs of (length, weights or None) interactions as
    one array; None when no run has any (a run without weights weighs 1)."""
    if all(weights is None for _, weights in parts):
        return None
    return np.concatenate([np.ones(n) if weights is None else np.asarray(weights, np.float64)
                           for n, weights in parts])


def concat_periods(periods: Sequence[PeriodLike]) -> PeriodData:
    """Several consecutive periods as one (for pretraining on a run of periods)."""
    return PeriodData(
        users=np.concatenate([p.users for p in periods]).astype(np.int64),
        items=np.concatenate([p.items for p in periods]).astype(np.int64),
        n_users=max(p.n_users for p in periods),
        n_items=max(p.n_items for p in periods),
        weights=join_weights([(len(p.users), weights_of(p)) for p in periods]),
    )


def period_state(data: PeriodData | None) -> dict[str, Any] | None:
    """A period as checkpoint-safe values (tensors and ints)."""
    if data is None:
        return None
    state: dict[str, Any] = {
        "users": torch.from_numpy(data.users.copy()),
        "items": torch.from_numpy(data.items.copy()),
        "n_users": data.n_users,
        "n_items": data.n_items,
    }
    if data.weights is not None:
        state["weights"] = torch.from_numpy(np.asarray(data.weights, np.float64).copy())
    return state


def period_from_state(state: dict[str, Any] | None) -> PeriodData | None:
    """:func:`period_state` read back (a state written before weights: unweighted)."""
    if state is None:
        return None
    weights = state.get("weights")
    return PeriodData(state["users"].numpy(), state["items"].numpy(), int(state["n_users"]),
                      int(state["n_items"]), None if weights is None else weights.numpy())


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

    def forget_users(self, users: np.ndarray) -> None:
        """Users whose data was deleted: their rows are zeroed, and every interaction
        of theirs the strategy keeps (seen pairs, previous period, history,
        reservoir) is dropped."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
