"""The period boundary, in the order docs/design.md gives.

When period t has closed, :meth:`PeriodTrainer.run`:

1. scores the model that served during t (W_{t-1}) on D_t with the online metric
   (``worker.evaluate``) and records it on that version, before D_t trains anything;
2. and 3. hands D_t to the strategy: for SML that is the meta step for t-1 (Theta
   updated on D_t) and step 1 for t, giving W_t;
4. writes the model artifact atomically, points the strategy checkpoint at the new
   state, records the version, activates it, marks the period trained and
   publishes the version.

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
import torch

from sml.model import MFWeights
from sml.strategy import PeriodData, Strategy
from smlrec.settings import Settings
from store import (
    ArtifactCorrupt,
    ArtifactStore,
    Bus,
    BusUnavailable,
    ModelArtifact,
    PeriodArrays,
    Store,
    VersionInfo,
    popular_items,
)
from worker.checkpoint import (
    CheckpointRef,
    current_checkpoint,
    point_at,
    restore_strategy,
    save_checkpoint,
)
from worker.evaluate import SeenIndex, online_metrics

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """This worker is no longer the leader: it must not write anything more."""


def model_name(version: int) -> str:
    return f"model-v{version:06d}.pt"


def model_payload(
    *,
    version: int,
    period_id: int,
    strategy: str,
    weights: MFWeights,
    user_ids: list[str],
    item_ids: list[str],
    seen: SeenIndex,
    popular: np.ndarray,
) -> dict[str, Any]:
    """The model artifact's payload (:class:`store.ModelArtifact`), checked."""
    n_users, n_items = weights.n_users, weights.n_items
    if len(user_ids) < n_users or len(item_ids) < n_items:
        raise ValueError(
            f"the store knows {len(user_ids)} users / {len(item_ids)} items, "
            f"fewer than the model's {n_users} / {n_items}"
        )
    indptr = seen.indptr[: n_users + 1]
    if len(indptr) < n_users + 1:  # users without any interaction at the end of the table
        indptr = np.concatenate([indptr, np.full(n_users + 1 - len(indptr), indptr[-1])])
    artifact = ModelArtifact(
        version=int(version),
        period_id=int(period_id),
        strategy=strategy,
        created_at=time.time(),
        user=weights.user.detach().to(torch.float32).contiguous(),  # (n_users, dim + 1)
        item=weights.item.detach().to(torch.float32).contiguous(),  # (n_items, dim + 1)
        user_ids=list(user_ids[:n_users]),
        item_ids=list(item_ids[:n_items]),
        seen_indptr=indptr.astype(np.int64),  # (n_users + 1,)
        seen_items=seen.items[: int(indptr[-1])].astype(np.int64),
        popular=popular.astype(np.int64),  # (<= 1000,)
    )
    return artifact.to_payload()


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
        self._seen: tuple[int, SeenIndex] | None = None  # seen pairs through a period
        self._model: tuple[int, MFWeights] | None = None  # the last version written

    # ---- state --------------------------------------------------------------

    def restore(self) -> None:
        """Resume the strategy from the checkpoint the store points at."""
        self.strategy, self.checkpoint = restore_strategy(
            self.settings, self.artifacts, current_checkpoint(self.store)
        )
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
            self.settings, self.artifacts, self.checkpoint
        )

    # ---- the boundary ---------------------------------------------------------

    def run(self, period_id: int) -> BoundaryResult:
        """Run (or finish) the boundary of closed period ``period_id``."""
        period = self.store.get_period(period_id)
        if period is None:
            raise ValueError(f"period {period_id} does not exist")
        if period.status == "open":
            raise ValueError(f"period {period_id} is still open")
        existing = self._version_of(period_id)
        if period.status == "trained":
            log.info("period %d is already trained", period_id)
            return BoundaryResult(period_id, existing.version if existing else None, False)
        if existing is not None:  # recorded before an interruption: finish it off
            self._activate(existing.version, period_id)
            return BoundaryResult(period_id, existing.version, False)

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
            weights = self.strategy.boundary(self._period_data(arrays))
            train_seconds = time.perf_counter() - started
            log.info(
                "period %d: %s boundary took %.2f s", period_id, self.strategy.name, train_seconds
            )
            self.check_leader()
            self.checkpoint = self._checkpoint(period_id, train_seconds, through=through)
            trained = True
        version = self._write_version(period_id, weights, arrays, seen, train_seconds)
        return BoundaryResult(period_id, version, trained)

    def _period_data(self, arrays: PeriodArrays) -> PeriodData:
        """The period as the strategy takes it, each interaction with its training
        weight: its tables never shrink (a late period knows fewer users and items
        than the model already has)."""
        model = self.strategy.model
        n_users = max(arrays.n_users, model.n_users if model is not None else 0)
        n_items = max(arrays.n_items, model.n_items if model is not None else 0)
        return PeriodData(arrays.users, arrays.items, n_users, n_items, arrays.weights)

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
        expected = (self.store.latest_version() or 0) + 1
        payload = model_payload(
            version=expected,
            period_id=period_id,
            strategy=self.strategy.name,
            weights=weights,
            user_ids=self.store.user_ids(),
            item_ids=self.store.item_ids(),
            seen=seen,
            popular=popular_items(arrays.items),
        )
        self.check_leader()
        ref = self.artifacts.save(model_name(expected), payload)
        self.check_leader()
        version = self.store.record_version(
            period_id=period_id,
            strategy=self.strategy.name,
            path=ref.path,
            sha256=ref.sha256,
            size_bytes=ref.size_bytes,
            train_seconds=train_seconds,
            n_users=weights.n_users,
            n_items=weights.n_items,
        )
        if version != expected:
            log.warning("version %d was recorded with the artifact of %d", version, expected)
        self._model = (version, weights)
        self._activate(version, period_id)
        return version

    def _activate(self, version: int, period_id: int) -> None:
        """Serve ``version`` (unless a version of a later period is active: a late
        period's) and mark its period trained."""
        active = self.store.active_version()
        info = self.store.get_version(active) if active is not None else None
        if info is not None and info.period_id > period_id:
            self.store.mark_trained(period_id)
            log.info("version %d (late period %d) recorded; version %d of period %d "
                     "stays active", version, period_id, info.version, info.period_id)
            return
        self.store.set_active_version(version)
        self.store.mark_trained(period_id)
        try:
            self.bus.publish_active(version)
        except BusUnavailable:
            log.warning("could not announce version %d; replicas pick it up by polling", version)
        log.info("version %d (period %d) is active", version, period_id)

    def _version_of(self, period_id: int) -> VersionInfo | None:
        for info in self.store.list_versions():
            if info.period_id == period_id:
                return info
        return None

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
        return earlier[0] if earlier else None

    def _score_served(self, period_id: int, arrays: PeriodArrays, seen: SeenIndex) -> None:
        info = self._served(period_id)
        if info is None:
            return
        evaluated = (info.metrics or {}).get("evaluated_on_period")
        if evaluated is not None:
            if evaluated != period_id:
                log.info("version %d keeps its metrics on period %s", info.version, evaluated)
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
        log.info(
            "version %d on period %d: recall@20 %.4f, ndcg@20 %.4f (%d interactions)",
            info.version,
            period_id,
            metrics["recall@20"],
            metrics["ndcg@20"],
            metrics["n_interactions"],
        )

    def _weights_of(self, info: VersionInfo) -> MFWeights | None:
        if self._model is not None and self._model[0] == info.version:
            return self._model[1]
        try:
            payload = self.artifacts.load(info.path, info.sha256, info.size_bytes)
        except ArtifactCorrupt as error:
            log.error("cannot score version %d: %s", info.version, error)
            return None
        return MFWeights(payload["user"], payload["item"])
