"""Challenger strategies: the lineup's other strategies (``SMLREC_CHALLENGERS``),
trained on the same periods as the served one and scored the same way, so an
operator sees which strategy suits this traffic.

At a boundary, once the served strategy's new version is active (a challenger
never delays it), each challenger in turn

1. scores its model (trained through t-1) on D_t with the online metric, with the
   same sampled negatives as the served model, and records the score;
2. learns D_t, checkpoints its state under its own pointer and writes its model as
   a version that is recorded but not served.

A challenger configured later joins from the model that served during t and the
stored history (the strategy's warm start, as the replay starts every method from
the pretrained model), so it neither replays every period nor starts from
nothing; its first score is on the period after it joined. Every step is safe to
repeat: a challenger whose checkpoint is already past t only writes the version it
may lack, and a score already recorded stands. A challenger that fails is logged and
skipped for the period (the served boundary still succeeds); it goes on from its
last checkpoint at the next one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sml.model import MFWeights
from sml.strategy import PeriodData, Strategy
from smlrec.settings import Settings
from store import ArtifactStore, BusUnavailable, PeriodArrays, Store, StoreUnavailable
from store.lineup import challengers, version_of
from worker.checkpoint import (
    CheckpointRef,
    checkpoint_of,
    new_strategy,
    point_at,
    restore_strategy,
    save_checkpoint,
)
from worker.evaluate import SeenIndex, online_metrics
from worker.forgetting import Deletions
from worker.leader import LeadershipLost
from worker.versions import write_version

log = logging.getLogger(__name__)


def _lowest_priority() -> None:
    """This thread at nice 19 (Linux: a thread's own priority); elsewhere unchanged."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError) as error:
        log.debug("challengers keep the worker's priority: %s", error)


def period_data(arrays: PeriodArrays, model: MFWeights | None) -> PeriodData:
    """A period as a strategy takes it, each interaction with its training weight:
    its tables never shrink (a late period knows fewer users and items than the
    model already has)."""
    n_users = max(arrays.n_users, model.n_users if model is not None else 0)
    n_items = max(arrays.n_items, model.n_items if model is not None else 0)
    return PeriodData(arrays.users, arrays.items, n_users, n_items, arrays.weights)


@dataclass(frozen=True)
class ClosedPeriod:
    """What a challenger needs of the period that closed: its interactions, the
    seen pairs through it (for the metric and the artifact), and the model that
    served during it (where a new challenger joins from)."""

    period_id: int
    arrays: PeriodArrays
    seen: SeenIndex
    served: MFWeights | None


class Challengers:
    """Holds the challengers' states between boundaries and runs their part of one."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        artifacts: ArtifactStore,
        check_leader: Callable[[], None],
        deletions: Deletions | None = None,
    ) -> None:
        self.settings = settings
        self.deletions = deletions or Deletions(store)
        self.lowest_priority = False
        self.store = store
        self.artifacts = artifacts
        self.check_leader = check_leader
        self._held: dict[str, tuple[Strategy, CheckpointRef | None]] = {}

    def reset(self) -> None:
        """Forget in-memory states: the next boundary resumes each from its pointer."""
        self._held.clear()
        self.deletions.reset()

    def pending(self, period_id: int, serving: str) -> list[str]:
        """The challengers that still have ``period_id`` to learn or to write."""
        return [name for name in challengers(serving, self.settings)
                if not self._done(name, period_id)]

    def run(self, period: ClosedPeriod, names: list[str]) -> dict[str, int]:
        """Score, train and write each challenger in ``names``; returns the versions
        written, by strategy. With ``lowest_priority``, the calling thread (a
        boundary's own: it ends with it) first drops to the lowest CPU priority, so
        the challengers yield to serving, and to the replicas' ranking of the
        version just swapped in, more than the served strategy's training does."""
        if self.lowest_priority:
            _lowest_priority()
        written = {}
        for name in names:
            try:
                version = self._one(name, period)
            except (LeadershipLost, StoreUnavailable, BusUnavailable):
                raise  # the boundary as a whole stops and is run again
            except Exception:  # a challenger never fails the served boundary
                log.exception("challenger %s failed on period %d: it learns the next "
                              "period from its last checkpoint", name, period.period_id)
                self._held.pop(name, None)
                self.deletions.reset(name)
                continue
            if version is not None:
                written[name] = version
        return written

    # ---- one challenger ----------------------------------------------------------

    def _state(self, name: str) -> tuple[Strategy, CheckpointRef | None]:
        if name not in self._held:
            self._held[name] = restore_strategy(
                self.settings, self.artifacts, checkpoint_of(self.store, name), name)
        return self._held[name]

    def _done(self, name: str, period_id: int) -> bool:
        ref = self._state(name)[1]
        return (ref is not None and ref.through_period >= period_id
                and self._version(name, period_id) is not None)

    def _version(self, name: str, period_id: int) -> int | None:
        info = version_of(self.store, name, period_id)
        return info.version if info is not None else None

    def _one(self, name: str, period: ClosedPeriod) -> int | None:
        strategy, ref = self._state(name)
        if ref is None:
            strategy = self._join(name, period)
        self.deletions.apply(strategy)
        if ref is not None and ref.through_period < period.period_id:
            self._score(name, strategy, ref, period)
        if ref is None or ref.through_period < period.period_id:
            self.check_leader()
            started = time.perf_counter()
            strategy.boundary(period_data(period.arrays, strategy.model))
            seconds = time.perf_counter() - started
            log.info("period %d: challenger %s took %.2f s", period.period_id, name, seconds)
            self.check_leader()
            through = ref.through_period if ref is not None else -1
            ref = save_checkpoint(self.artifacts, strategy, period.period_id, seconds, name,
                                  through)
            self.check_leader()
            point_at(self.store, ref, serving=False)
            self._held[name] = (strategy, ref)
        if self._version(name, period.period_id) is not None or strategy.model is None:
            return None
        return write_version(
            self.store, self.artifacts, self.check_leader,
            period_id=period.period_id, strategy=name, weights=strategy.model,
            arrays=period.arrays, seen=period.seen, train_seconds=ref.train_seconds,
        )

    def _join(self, name: str, period: ClosedPeriod) -> Strategy:
        """A fresh ``name``, started from the model that served during the period and
        the history before it (nothing to start from before the first model)."""
        strategy = new_strategy(self.settings, name)
        if period.served is not None and period.period_id > 0:
            weights = self.settings.type_weight_map
            before = self.store.period_arrays(period.period_id - 1, weights)
            history = [self.store.history_arrays(period.period_id - 1, weights), before]
            strategy.warm_start(period.served, [p for p in history if len(p)] or [before])
            log.info("challenger %s joins at period %d from the served model",
                     name, period.period_id)
        return strategy

    def _score(self, name: str, strategy: Strategy, ref: CheckpointRef,
               period: ClosedPeriod) -> None:
        """Record ``name``'s model (through the period before) scored on the period."""
        model = strategy.model
        if model is None:
            return
        metrics = online_metrics(
            model, period.arrays.users, period.arrays.items, period.arrays.n_items, period.seen,
            seed=self.settings.seed, period_id=period.period_id,
        )
        version = self._version(name, ref.period_id)
        self.store.record_score(period_id=period.period_id, strategy=name, version=version,
                                metrics=metrics, train_seconds=ref.train_seconds)
        info = self.store.get_version(version) if version is not None else None
        if info is not None and info.metrics is None:
            self.store.set_metrics(info.version, metrics)
        log.info("challenger %s on period %d: recall@20 %.4f, ndcg@20 %.4f", name,
                 period.period_id, metrics["recall@20"], metrics["ndcg@20"])
