"""The retraining strategies SML is compared with, all on the same MF base.

- Fine-tune: at each period, train on D_t only, from the previous model.
- Full-retrain: at each period, train on D_0..D_t, from the previous model.
- SPMF (stream-centred probabilistic MF, Wang et al., ICDE 2018, as used by the
  SML paper): fine-tune on D_t plus a reservoir sample of earlier interactions;
  the reservoir (fixed size, Vitter's algorithm R over the interaction stream) is
  updated after each period.
- Popularity: items ranked by their interaction count so far (the protocol's
  reference). It is expressed as an MF with zero embeddings and item bias
  log(1 + count), so that it is scored and served like every other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sml.fit import FitConfig, SeenPairs, fit_mf
from sml.model import MFConfig, MFWeights
from sml.strategy import PeriodData, PeriodLike, concat_periods


@dataclass(frozen=True)
class BaselineConfig:
    mf: MFConfig = field(default_factory=MFConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    reservoir_size: int = 10_000  # SPMF only
    seed: int = 0


class _Retrain:
    """Shared bookkeeping: the served model, the seen pairs, the random state."""

    name = "retrain"

    def __init__(self, config: BaselineConfig) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.seen = SeenPairs()
        self.current: MFWeights | None = None

    @property
    def model(self) -> MFWeights | None:
        return self.current

    def set_update_transfer(self, enabled: bool) -> None:
        """Nothing learned to freeze: baselines ignore it."""

    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        data = concat_periods(history)
        self.seen = SeenPairs()
        self.seen.add(data.users, data.items)
        self.current = base.detach()
        self._remember(data)

    def boundary(self, period: PeriodLike) -> MFWeights:
        data = PeriodData(period.users, period.items, period.n_users, period.n_items)
        self.seen.add(data.users, data.items)
        if self.current is None:
            start = MFWeights.init(self.config.mf, data.n_users, data.n_items, self.generator)
        else:
            start = self.current.grow(data.n_users, data.n_items, self.config.mf, self.generator)
        users, items = self._training_pairs(data)
        self.current = fit_mf(
            start, users, items, seen=self.seen, config=self.config.fit, rng=self.rng
        )
        self._remember(data)
        return self.current

    def _training_pairs(self, data: PeriodData) -> tuple[np.ndarray, np.ndarray]:
        return data.users, data.items

    def _remember(self, data: PeriodData) -> None:
        """Keep what later periods need (history, reservoir); nothing by default."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "config": asdict(self.config),
            "current": None if self.current is None else self.current.state_dict(),
            "seen": torch.from_numpy(self.seen.keys.copy()),
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            **self._extra_state(),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        current = state["current"]
        self.current = None if current is None else MFWeights.from_state_dict(current)
        self.seen = SeenPairs(state["seen"].numpy())
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        self._load_extra(state)

    def _load_extra(self, state: dict[str, Any]) -> None:
        pass


class FineTune(_Retrain):
    name = "fine_tune"


class FullRetrain(_Retrain):
    name = "full_retrain"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.history_users = np.zeros(0, dtype=np.int64)
        self.history_items = np.zeros(0, dtype=np.int64)

    def _training_pairs(self, data: PeriodData) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([self.history_users, data.users]),
            np.concatenate([self.history_items, data.items]),
        )

    def _remember(self, data: PeriodData) -> None:
        self.history_users = np.concatenate([self.history_users, data.users])
        self.history_items = np.concatenate([self.history_items, data.items])

    def _extra_state(self) -> dict[str, Any]:
        return {
            "history_users": torch.from_numpy(self.history_users.copy()),
            "history_items": torch.from_numpy(self.history_items.copy()),
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.history_users = state["history_users"].numpy()
        self.history_items = state["history_items"].numpy()


class SPMF(_Retrain):
    name = "spmf"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.reservoir_users = np.zeros(0, dtype=np.int64)
        self.reservoir_items = np.zeros(0, dtype=np.int64)
        self.stream_length = 0  # interactions offered to the reservoir so far

    def _training_pairs(self, data: PeriodData) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([data.users, self.reservoir_users]),
            np.concatenate([data.items, self.reservoir_items]),
        )

    def _remember(self, data: PeriodData) -> None:
        """Algorithm R: the reservoir stays a uniform sample of every interaction so far."""
        size = self.config.reservoir_size
        users, items = self.reservoir_users.copy(), self.reservoir_items.copy()
        free = max(0, size - len(users))
        users = np.concatenate([users, data.users[:free]])
        items = np.concatenate([items, data.items[:free]])
        seen = self.stream_length + min(free, len(data.users))
        for u, i in zip(data.users[free:], data.items[free:], strict=True):
            seen += 1
            slot = int(self.rng.integers(0, seen))
            if slot < size:
                users[slot], items[slot] = u, i
        self.stream_length = seen
        self.reservoir_users, self.reservoir_items = users, items

    def _extra_state(self) -> dict[str, Any]:
        return {
            "reservoir_users": torch.from_numpy(self.reservoir_users.copy()),
            "reservoir_items": torch.from_numpy(self.reservoir_items.copy()),
            "stream_length": self.stream_length,
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.reservoir_users = state["reservoir_users"].numpy()
        self.reservoir_items = state["reservoir_items"].numpy()
        self.stream_length = int(state["stream_length"])


class Popularity(_Retrain):
    name = "popularity"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.counts = np.zeros(0, dtype=np.int64)

    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        for period in history:
            self.boundary(period)

    def boundary(self, period: PeriodLike) -> MFWeights:
        counts = np.bincount(period.items, minlength=period.n_items)
        counts[: len(self.counts)] += self.counts
        self.counts = counts
        dim = self.config.mf.dim
        item = torch.zeros(len(counts), dim + 1)
        item[:, -1] = torch.from_numpy(np.log1p(counts)).float()
        self.current = MFWeights(torch.zeros(period.n_users, dim + 1), item)
        return self.current

    def _extra_state(self) -> dict[str, Any]:
        return {"counts": torch.from_numpy(self.counts.copy())}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.counts = state["counts"].numpy()
