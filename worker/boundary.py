"""The period boundary, in the order docs/design.md gives.

When period t has closed, :meth:`PeriodTrainer.run`:

1. scores the model that served during t (W_{t-1}) on D_t with the online metric
   (``worker.evaluate``) and records it on that version, before D_t trains anything;
2. and 3. hands D_t to the strategy: for SML that is the meta step for t-1 (Theta
   updated on D_t) and step 1 for t, giving W_t;
4. writes the model artifact atomically, points the strategy checkpoint at the new
   state, records the version, activates it, marks the period trained and
   publishes the version;
5. runs the challengers' part (``worker.challengers``) and the promotion rule.

The strategy trained first is the one chosen to serve (``store.lineup``); when the
choice changes, the next boundary resumes the chosen one from its own checkpoint.

Every step is safe to repeat, so a boundary interrupted anywhere can be run again:
a period that already has a version is only finished off (activated, marked,
published); a strategy checkpoint taken after the period's boundary (written just
before an interruption) is reused instead of training D_t a second time.

A period is never refused because the strategy has moved past it (a retry of a
period that gave up while later ones trained): the strategy learns it from where
it stands, as a late period, and its version is recorded; it is served only if
no version of a later period is active.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sml.model import MFWeights
from sml.strategy import Strategy
from smlrec.settings import Settings
from store import (
    ArtifactCorrupt,
    ArtifactStore,
    Bus,
    BusUnavailable,
    PeriodArrays,
    Store,
    VersionInfo,
)
from store.lineup import (
    choose_serving,
    latest_version_of,
    promotion_pick,
    serving_strategy,
    version_of,
)
from worker.challengers import Challengers, ClosedPeriod, period_data
from worker.checkpoint import (
    CheckpointRef,
    checkpoint_of,
    point_at,
    restore_strategy,
    save_checkpoint,
)
from worker.evaluate import SeenIndex, online_metrics
from worker.forgetting import Deletions
from worker.versions import write_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoundaryResult:
    period_id: int
    version: int | None  # None: the period was trained without producing a version
    trained: bool  # False when an earlier run had already trained the period


class PeriodTrainer:
    """Holds the retraining strategy between boundaries and runs them.

    ``check_leader`` raises :class:`LeadershipLost` when the worker lost its lease;
    it is called before anything is written."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: Bus,
        artifacts: ArtifactStore,
        check_leader: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.artifacts = artifacts
        self.check_leader = check_leader
        self.strategy, self.checkpoint = restore_strategy(settings, artifacts, None)
        self.deletions = Deletions(store)
        self.challengers = Challengers(settings, store, artifacts, check_leader, self.deletions)
        self._seen: tuple[int, SeenIndex] | None = None  # seen pairs through a period
        self._model: tuple[int, MFWeights] | None = None  # the last version written
        self._served_during: tuple[int, VersionInfo | None] | None = None

    # ---- state --------------------------------------------------------------

    def restore(self) -> None:
        """Resume the serving strategy from the checkpoint the store points at."""
        name = serving_strategy(self.store, self.settings)
        self.strategy, self.checkpoint = restore_strategy(
            self.settings, self.artifacts, checkpoint_of(self.store, name), name
        )
        self.challengers.reset()
        self.deletions.reset()
        self._seen = None
        trained = [p.period_id for p in self.store.list_periods() if p.status == "trained"]
        done = self.checkpoint.through_period if self.checkpoint else None
        if trained and (done is None or done < max(trained)):
            log.warning(
                "strategy checkpoint is behind the last trained period %d (checkpoint: %s); "
                "continuing from it, trained periods are not retrained",
                max(trained),
                "none" if done is None else f"period {done}",
            )

    def reset(self) -> None:
        """Drop in-memory changes since the last checkpoint (after a failed boundary)."""
        self.strategy, self.checkpoint = restore_strategy(
            self.settings, self.artifacts, self.checkpoint, self.strategy.name
        )
        self.challengers.reset()
        self.deletions.reset()

    # ---- the boundary ---------------------------------------------------------

    def run(self, period_id: int) -> BoundaryResult:
        """Run (or finish) the boundary of closed period ``period_id``: the serving
        strategy's first, then the challengers'."""
        if serving_strategy(self.store, self.settings) != self.strategy.name:
            self.restore()  # another strategy was chosen: it trains first from now on
        result = self._run_served(period_id)
        self._run_challengers(period_id)
        return result

    def _run_served(self, period_id: int) -> BoundaryResult:
        period = self.store.get_period(period_id)
        if period is None:
            raise ValueError(f"period {period_id} does not exist")
        if period.status == "open":
            raise ValueError(f"period {period_id} is still open")
        existing = version_of(self.store, self.strategy.name, period_id)
        if period.status == "trained":
            log.info("period %d is already trained", period_id)
            return BoundaryResult(period_id, existing.version if existing else None, False)
        if existing is not None:  # recorded before an interruption: finish it off
            self._activate(existing.version, period_id)
            return BoundaryResult(period_id, existing.version, False)

        if self.deletions.apply(self.strategy):  # users deleted: seen pairs read again
            self._seen = None
        arrays = self.store.period_arrays(period_id, self.settings.type_weight_map)
        seen = self._seen_through(period_id, arrays)
        self._score_served(period_id, arrays, seen)
        checkpoint = self.checkpoint
        through = checkpoint.through_period if checkpoint is not None else -1
        if checkpoint is not None and checkpoint.period_id == period_id:
            # The state after this period was saved just before an interruption.
            weights, train_seconds = self._current_model(), checkpoint.train_seconds
            trained = False
        else:
            if through > period_id:
                log.warning("period %d: the strategy has learnt up to period %d; it learns "
                            "this one late, from where it stands", period_id, through)
            self.check_leader()
            started = time.perf_counter()
            weights = self.strategy.boundary(period_data(arrays, self.strategy.model))
            train_seconds = time.perf_counter() - started
            log.info(
                "period %d: %s boundary took %.2f s", period_id, self.strategy.name, train_seconds
            )
            self.check_leader()
            self.checkpoint = self._checkpoint(period_id, train_seconds, through=through)
            trained = True
        version = self._write_version(period_id, weights, arrays, seen, train_seconds)
        return BoundaryResult(period_id, version, trained)

    def commit(self, period_id: int, strategy: Strategy, train_seconds: float, tag: str) -> int:
        """Adopt ``strategy``, already trained through closed period ``period_id``
        (an offline replay), as the worker's: checkpoint it (under ``tag``) and make
        its model the active version."""
        self.strategy = strategy
        arrays = self.store.period_arrays(period_id)
        seen = self._seen_through(period_id, arrays)
        self.check_leader()
        self.checkpoint = self._checkpoint(period_id, train_seconds, tag)
        return self._write_version(period_id, self._current_model(), arrays, seen, train_seconds)

    def _current_model(self) -> MFWeights:
        model = self.strategy.model
        if model is None:
            raise ValueError("the restored strategy holds no model")
        return model

    def _checkpoint(
        self, period_id: int, train_seconds: float, tag: str = "", through: int = -1
    ) -> CheckpointRef:
        ref = save_checkpoint(self.artifacts, self.strategy, period_id, train_seconds, tag,
                              through)
        self.check_leader()
        point_at(self.store, ref)
        return ref

    def _write_version(
        self,
        period_id: int,
        weights: MFWeights,
        arrays: PeriodArrays,
        seen: SeenIndex,
        train_seconds: float,
    ) -> int:
        version = write_version(
            self.store, self.artifacts, self.check_leader,
            period_id=period_id, strategy=self.strategy.name, weights=weights,
            arrays=arrays, seen=seen, train_seconds=train_seconds,
        )
        self._model = (version, weights)
        self._activate(version, period_id)
        return version

    def _activate(self, version: int, period_id: int) -> None:
        """Serve ``version`` (unless a version of a later period is active: a late
        period's; or another strategy was chosen meanwhile) and mark its period
        trained."""
        active = self.store.active_version()
        info = self.store.get_version(active) if active is not None else None
        serving = serving_strategy(self.store, self.settings)
        if (info is not None and info.period_id > period_id) or serving != self.strategy.name:
            self.store.mark_trained(period_id)
            log.info("version %d (%s, period %d) recorded; version %s stays active",
                     version, self.strategy.name, period_id, active)
            return
        self._serve(version, period_id)

    def _serve(self, version: int, period_id: int) -> None:
        self.store.set_active_version(version)
        self.store.mark_trained(period_id)
        try:
            self.bus.publish_active(version)
        except BusUnavailable:
            log.warning("could not announce version %d; replicas pick it up by polling", version)
        log.info("version %d (period %d) is active", version, period_id)

    # ---- challengers ------------------------------------------------------------

    def _run_challengers(self, period_id: int) -> None:
        """The challengers' part of the boundary (after the served swap), then the
        promotion: the chosen strategy's newest version is served if it is not."""
        pending = self.challengers.pending(period_id, self.strategy.name)
        if pending:
            arrays = self.store.period_arrays(period_id, self.settings.type_weight_map)
            served = self._served_during
            info = served[1] if served is not None and served[0] == period_id else (
                self._served(period_id))
            period = ClosedPeriod(period_id, arrays, self._seen_through(period_id, arrays),
                                  self._weights_of(info) if info is not None else None)
            self.challengers.run(period, pending)
        if len(self.settings.lineup) > 1:
            self._follow_choice(period_id)

    def _follow_choice(self, period_id: int) -> None:
        serving = serving_strategy(self.store, self.settings)
        periods = self.settings.promotion_periods
        if periods is not None:
            pick = promotion_pick(self.store.strategy_scores(periods), periods, serving)
            if pick is not None and latest_version_of(self.store, pick) is not None:
                log.info("promotion: %s scored best in each of the last %d periods; "
                         "it is served from now on (was %s)", pick, periods, serving)
                choose_serving(self.store, pick)
                serving = pick
        chosen = latest_version_of(self.store, serving)
        active = self.store.active_version()
        if chosen is not None and chosen.version != active and chosen.period_id >= period_id:
            self._serve(chosen.version, chosen.period_id)


    # ---- evaluation -------------------------------------------------------------

    def _seen_through(self, period_id: int, arrays: PeriodArrays) -> SeenIndex:
        """Items each user interacted with up to the end of ``period_id``."""
        if self._seen is not None and self._seen[0] == period_id:
            return self._seen[1]
        if self._seen is not None and self._seen[0] == period_id - 1:
            before = self._seen[1]
            users = np.repeat(np.arange(len(before.indptr) - 1), np.diff(before.indptr))
            items = before.items
        else:
            history = self.store.history_arrays(period_id)
            users, items = history.users, history.items
        seen = SeenIndex.build(
            np.concatenate([users, arrays.users]),
            np.concatenate([items, arrays.items]),
            arrays.n_users,
        )
        self._seen = (period_id, seen)
        return seen

    def _served(self, period_id: int) -> VersionInfo | None:
        """The version that served during ``period_id``: the active one, unless it
        was itself trained on that period or later (then the newest before it)."""
        active = self.store.active_version()
        info = self.store.get_version(active) if active is not None else None
        if info is not None and info.period_id < period_id:
            return info
        earlier = [v for v in self.store.list_versions() if v.period_id < period_id]
        same = [v for v in earlier if info is not None and v.strategy == info.strategy]
        candidates = same or earlier
        return candidates[0] if candidates else None

    def _score_served(self, period_id: int, arrays: PeriodArrays, seen: SeenIndex) -> None:
        """Score the version that served during the period on it, on the version and
        as its strategy's score for the period."""
        info = self._served(period_id)
        self._served_during = (period_id, info)
        if info is None:
            return
        evaluated = (info.metrics or {}).get("evaluated_on_period")
        if evaluated is not None:
            if evaluated != period_id:
                log.info("version %d keeps its metrics on period %s", info.version, evaluated)
            else:  # scored before an interruption
                self._record_score(period_id, info, info.metrics or {})
            return
        weights = self._weights_of(info)
        if weights is None:
            return
        metrics = online_metrics(
            weights,
            arrays.users,
            arrays.items,
            arrays.n_items,
            seen,
            seed=self.settings.seed,
            period_id=period_id,
        )
        self.store.set_metrics(info.version, metrics)
        self._record_score(period_id, info, metrics)
        log.info(
            "version %d on period %d: recall@20 %.4f, ndcg@20 %.4f (%d interactions)",
            info.version,
            period_id,
            metrics["recall@20"],
            metrics["ndcg@20"],
            metrics["n_interactions"],
        )

    def _record_score(self, period_id: int, info: VersionInfo, metrics: dict[str, Any]) -> None:
        self.store.record_score(period_id=period_id, strategy=info.strategy,
                                version=info.version, metrics=metrics,
                                train_seconds=info.train_seconds)

    def _weights_of(self, info: VersionInfo) -> MFWeights | None:
        if self._model is not None and self._model[0] == info.version:
            return self._model[1]
        if info.removed_at is not None:
            return None
        try:
            payload = self.artifacts.load(info.path, info.sha256, info.size_bytes)
        except ArtifactCorrupt as error:
            log.error("cannot score version %d: %s", info.version, error)
            return None
        return MFWeights(payload["user"], payload["item"])
