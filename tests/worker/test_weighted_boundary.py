"""The boundary hands the strategy each interaction's training weight: its stored
weight times its type's factor from SMLREC_TYPE_WEIGHTS (none at all when every
one is 1, the unweighted loss exactly), and the bootstrap's replay does the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from worker_testkit import make_settings

from sml.model import MFWeights
from sml.strategy import PeriodLike
from store import ArtifactStore, InProcessBus, NewInteraction, Store
from worker.bootstrap import _replay_periods
from worker.boundary import PeriodTrainer

ROWS = [
    NewInteraction("u1", "i1", 1.0, None),
    NewInteraction("u1", "i2", 2.0, None, "like", 2.0),
    NewInteraction("u2", "i1", 3.0, None, "purchase", 0.5),
    NewInteraction("u2", "i3", 4.0, None, "like", 1.0),
]


def _trainer(store: Store, url: str, tmp_path: Path, type_weights: str) -> PeriodTrainer:
    settings = make_settings(url, tmp_path / "models", type_weights=type_weights,
                             strategy="fine_tune")
    return PeriodTrainer(settings, store, InProcessBus(), ArtifactStore(settings.model_dir))


def _seen_by(trainer: PeriodTrainer) -> list[PeriodLike]:
    periods: list[PeriodLike] = []
    boundary = trainer.strategy.boundary

    def recording(period: PeriodLike) -> MFWeights:
        periods.append(period)
        return boundary(period)

    trainer.strategy.boundary = recording  # type: ignore[method-assign]
    return periods


def test_the_strategy_trains_on_weight_times_type_weight(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    sqlite_store.ingest(ROWS)
    sqlite_store.close_period()
    trainer = _trainer(sqlite_store, sqlite_url, tmp_path, "like:3,view:1,other:7")
    periods = _seen_by(trainer)
    result = trainer.run(0)
    assert result.version == 1 and result.trained
    (period,) = periods
    assert period.weights.tolist() == [1.0, 6.0, 0.5, 3.0]  # type: ignore[attr-defined]
    assert period.users.tolist() == [0, 0, 1, 1]


def test_weights_that_are_all_one_reach_the_strategy_as_none(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    sqlite_store.ingest([NewInteraction("u1", "i1", 1.0, None),
                         NewInteraction("u1", "i2", 2.0, None, "like", 0.5)])
    sqlite_store.close_period()
    trainer = _trainer(sqlite_store, sqlite_url, tmp_path, "like:2")
    periods = _seen_by(trainer)
    trainer.run(0)
    assert periods[0].weights is None  # type: ignore[attr-defined]


def test_the_bootstrap_replays_the_stored_weights(
    sqlite_store: Store, sqlite_url: str, tmp_path: Path
) -> None:
    sqlite_store.ingest(ROWS[:2])
    first = sqlite_store.close_period()
    sqlite_store.ingest(ROWS[2:])
    second = sqlite_store.close_period()
    assert first is not None and second is not None
    seen: list[np.ndarray | None] = []

    class Recording:
        def boundary(self, period: PeriodLike) -> None:
            seen.append(period.weights)  # type: ignore[attr-defined]

    _replay_periods(sqlite_store, Recording(), [first, second],  # type: ignore[arg-type]
                    lambda: None, {"like": 10.0})
    assert [None if w is None else w.tolist() for w in seen] == [[1.0, 20.0], [0.5, 10.0]]
