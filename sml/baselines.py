"""The retraining strategies SML is compared with, all on the same MF base.

- Fine-tune: at each period, train on D_t only, from the previous model.
- Full-retrain: at each period, train on D_0..D_t, from the previous model.
- SPMF (stream-centered probabilistic MF; Wang, Yin, Huang, Wang, Du and Nguyen,
  "Streaming Ranking Based Recommender Systems", SIGIR 2018, the SML paper's
  baseline): fine-tune on D_t plus interactions drawn from a reservoir of earlier
  ones, those the current model ranks low drawn more often; the reservoir (fixed
  size, Vitter's algorithm R over the interaction stream) is updated after each
  period.
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
from sml.model import MFConfig, MFWeights, score_all
from sml.strategy import PeriodData, PeriodLike, as_period_data, concat_periods, join_weights

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # users, items, weights (None: 1)

# Largest score matrix (rows x catalog) SPMF materialises when ranking its reservoir.
_SCORE_BUDGET = 1 << 22


@dataclass(frozen=True)
class BaselineConfig:
    mf: MFConfig = field(default_factory=MFConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    reservoir_size: int = 10_000  # SPMF: interactions the reservoir holds
    # SPMF: reservoir interactions drawn (with replacement) into each boundary's training
    # data; None draws as many as D_t has, so old and new data weigh the same
    reservoir_draws: int | None = None
    # SPMF: s in p(draw) ~ exp(s * rank / n_items); 1 is the paper's rule, 0 uniform draws
    rank_sharpness: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.reservoir_size < 0 or (self.reservoir_draws or 0) < 0:
            raise ValueError("reservoir_size and reservoir_draws must be >= 0")
        if not self.rank_sharpness >= 0:
            raise ValueError(f"rank_sharpness must be >= 0, got {self.rank_sharpness}")


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

    @property
    def fitted(self) -> MFWeights | None:
        """Baselines serve what they fit: no merge to measure."""
        return None

    def set_update_transfer(self, enabled: bool) -> None:
        """Nothing learned to freeze: baselines ignore it."""

    def warm_start(self, base: MFWeights, history: Sequence[PeriodLike]) -> None:
        data = concat_periods(history)
        self.seen = SeenPairs()
        self.seen.add(data.users, data.items)
        self.current = base.detach()
        self._remember(data)

    def boundary(self, period: PeriodLike) -> MFWeights:
        data = as_period_data(period)
        self.seen.add(data.users, data.items)
        if self.current is None:
            start = MFWeights.init(self.config.mf, data.n_users, data.n_items, self.generator)
        else:
            start = self.current.grow(data.n_users, data.n_items, self.config.mf, self.generator)
        users, items, weights = self._training_pairs(data)
        self.current = fit_mf(
            start, users, items, seen=self.seen, config=self.config.fit, rng=self.rng,
            weights=weights,
        )
        self._remember(data)
        return self.current

    def forget_users(self, users: np.ndarray) -> None:
        self.seen.remove_users(users)
        if self.current is not None:
            self.current = self.current.without_users(users)
        self._forget_kept(users)

    def _forget_kept(self, users: np.ndarray) -> None:
        """Drop ``users``' interactions from what is kept for later periods."""

    def _training_pairs(self, data: PeriodData) -> Pairs:
        """The interactions to train on at this boundary, with their weights."""
        return data.users, data.items, data.weights

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
        self.history_weights: np.ndarray | None = None  # None: every one weighs 1

    def _training_pairs(self, data: PeriodData) -> Pairs:
        return (
            np.concatenate([self.history_users, data.users]),
            np.concatenate([self.history_items, data.items]),
            self._with_history(data),
        )

    def _with_history(self, data: PeriodData) -> np.ndarray | None:
        return join_weights([(len(self.history_users), self.history_weights),
                             (len(data.users), data.weights)])

    def _forget_kept(self, users: np.ndarray) -> None:
        keep = ~np.isin(self.history_users, users)
        self.history_users, self.history_items = self.history_users[keep], self.history_items[keep]
        if self.history_weights is not None:
            self.history_weights = self.history_weights[keep]

    def _remember(self, data: PeriodData) -> None:
        self.history_weights = self._with_history(data)
        self.history_users = np.concatenate([self.history_users, data.users])
        self.history_items = np.concatenate([self.history_items, data.items])

    def _extra_state(self) -> dict[str, Any]:
        return {
            "history_users": torch.from_numpy(self.history_users.copy()),
            "history_items": torch.from_numpy(self.history_items.copy()),
            "history_weights": _tensor(self.history_weights),
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.history_users = state["history_users"].numpy()
        self.history_items = state["history_items"].numpy()
        self.history_weights = _array(state.get("history_weights"))


class SPMF(_Retrain):
    """D_t whole, plus reservoir interactions drawn by how badly the current model ranks them.

    The SPMF paper samples the reservoir by rank: an interaction whose item the model
    already ranks near the top of the user's list teaches it little, one it ranks low
    is what it is forgetting. Here the rank of (u, i) is the number of items of the
    current model's catalog that u scores above i (ties count half), and each
    interaction is drawn with probability proportional to
    exp(rank_sharpness * rank / n_items), with replacement, `reservoir_draws` times
    (default: len(D_t)). With the default sharpness an interaction the model ranks
    last is drawn about e times as often as one it ranks first.
    """

    name = "spmf"

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__(config)
        self.reservoir_users = np.zeros(0, dtype=np.int64)
        self.reservoir_items = np.zeros(0, dtype=np.int64)
        self.reservoir_weights: np.ndarray | None = None  # None: every one weighs 1
        self.stream_length = 0  # interactions offered to the reservoir so far

    def _forget_kept(self, users: np.ndarray) -> None:
        keep = ~np.isin(self.reservoir_users, users)
        self.reservoir_users = self.reservoir_users[keep]
        self.reservoir_items = self.reservoir_items[keep]
        if self.reservoir_weights is not None:
            self.reservoir_weights = self.reservoir_weights[keep]

    def _catalog_size(self) -> int:
        """Items a reservoir interaction is ranked among (the current model's, at least)."""
        known = self.current.n_items if self.current is not None else 0
        stored = int(self.reservoir_items.max()) + 1 if len(self.reservoir_items) else 0
        return max(known, stored, 1)

    def reservoir_ranks(self) -> np.ndarray:
        """(R,) float64: each reservoir interaction's 0-based rank under the current model
        (items it does not know score -inf, so rank last)."""
        users, items = self.reservoir_users, self.reservoir_items
        out = np.zeros(len(users), dtype=np.float64)
        if self.current is None or len(users) == 0:
            return out
        n_catalog = self._catalog_size()
        step = max(1, _SCORE_BUDGET // n_catalog)
        with torch.no_grad():
            for lo in range(0, len(users), step):
                rows = torch.from_numpy(users[lo : lo + step])
                scores = score_all(self.current, rows, n_catalog).numpy()  # (B, n_catalog)
                positive = scores[np.arange(len(rows)), items[lo : lo + step], None]  # (B, 1)
                greater = np.count_nonzero(scores > positive, axis=1)
                equal = np.count_nonzero(scores == positive, axis=1) - 1  # not itself
                out[lo : lo + step] = greater + 0.5 * equal
        return out

    def draw_probabilities(self) -> np.ndarray:
        """(R,) float64 summing to 1: the chance of each reservoir interaction per draw."""
        if len(self.reservoir_users) == 0:
            return np.zeros(0, dtype=np.float64)
        logit = self.config.rank_sharpness * self.reservoir_ranks() / self._catalog_size()
        weights = np.exp(logit - logit.max())
        return weights / weights.sum()

    def _training_pairs(self, data: PeriodData) -> Pairs:
        """D_t, then the drawn reservoir interactions, each with its own weight."""
        draws = self.config.reservoir_draws
        n = len(data.users) if draws is None else draws
        if n == 0 or len(self.reservoir_users) == 0:
            return data.users, data.items, data.weights
        drawn = self.rng.choice(len(self.reservoir_users), size=n, p=self.draw_probabilities())
        kept = self.reservoir_weights
        return (
            np.concatenate([data.users, self.reservoir_users[drawn]]),
            np.concatenate([data.items, self.reservoir_items[drawn]]),
            join_weights([(len(data.users), data.weights),
                          (n, None if kept is None else kept[drawn])]),
        )

    def _remember(self, data: PeriodData) -> None:
        """Algorithm R: the reservoir stays a uniform sample of every interaction so far
        (an interaction keeps its weight in it)."""
        size = self.config.reservoir_size
        users, items = self.reservoir_users.copy(), self.reservoir_items.copy()
        free = max(0, size - len(users))
        weights = join_weights([(len(users), self.reservoir_weights),
                                (len(data.users[:free]), _head(data.weights, free))])
        users = np.concatenate([users, data.users[:free]])
        items = np.concatenate([items, data.items[:free]])
        seen = self.stream_length + min(free, len(data.users))
        for n, (u, i) in enumerate(zip(data.users[free:], data.items[free:], strict=True)):
            seen += 1
            slot = int(self.rng.integers(0, seen))
            if slot < size:
                users[slot], items[slot] = u, i
                if weights is not None:
                    weights[slot] = 1.0 if data.weights is None else data.weights[free + n]
        self.stream_length = seen
        self.reservoir_users, self.reservoir_items = users, items
        self.reservoir_weights = weights

    def _extra_state(self) -> dict[str, Any]:
        return {
            "reservoir_users": torch.from_numpy(self.reservoir_users.copy()),
            "reservoir_items": torch.from_numpy(self.reservoir_items.copy()),
            "reservoir_weights": _tensor(self.reservoir_weights),
            "stream_length": self.stream_length,
        }

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.reservoir_users = state["reservoir_users"].numpy()
        self.reservoir_items = state["reservoir_items"].numpy()
        self.reservoir_weights = _array(state.get("reservoir_weights"))
        self.stream_length = int(state["stream_length"])


def _head(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if weights is None else weights[:n]


def _tensor(weights: np.ndarray | None) -> torch.Tensor | None:
    """Weights as a checkpoint holds them (None stays None)."""
    return None if weights is None else torch.from_numpy(np.asarray(weights, np.float64).copy())


def _array(weights: torch.Tensor | None) -> np.ndarray | None:
    return None if weights is None else weights.numpy()


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
