"""Strategy checkpoints: the retraining strategy's whole state (W_{t-1}, W_{t-2},
W-hat, D_{t-1}, Theta, its optimiser and random generators) after period t,
written atomically as ``state-p{t:06d}.pt`` and pointed at by the store's
``strategy_state`` entry, so a restarted worker resumes where it stopped. Every
strategy of the lineup (the served one and each challenger) also has a pointer of
its own, ``strategy_state:<name>``, so either can take the other's place."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sml import hyperparameters as hp
from sml.device import resolve as resolve_device
from sml.registry import from_hyper
from sml.strategy import Strategy
from smlrec.settings import Settings
from store import ArtifactCorrupt, ArtifactStore, Store

log = logging.getLogger(__name__)

STATE_KEY = "strategy_state"
CHECKPOINT_FORMAT = "smlrec-strategy/1"


def checkpoint_name(period_id: int, tag: str = "") -> str:
    """``state-p{period:06d}.pt``; a tag keeps another writer's checkpoint of the same
    period (the bootstrap's) from replacing the file the store may point at."""
    return f"state-p{period_id:06d}{'-' + tag if tag else ''}.pt"


@dataclass(frozen=True)
class CheckpointRef:
    """Where the checkpoint taken after ``period_id``'s boundary lies, and its
    checksum. ``train_seconds`` is the duration of that boundary; ``through`` the
    latest period the state has learnt (above ``period_id`` after a late period:
    a retry of a period whose later ones trained first)."""

    path: str
    sha256: str
    size_bytes: int
    period_id: int
    strategy: str
    train_seconds: float
    through: int = -1

    @property
    def through_period(self) -> int:
        return max(self.period_id, self.through)

    def to_state(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "period_id": self.period_id,
            "strategy": self.strategy,
            "train_seconds": self.train_seconds,
            "through": self.through_period,
        }

    @classmethod
    def from_state(cls, value: Any) -> CheckpointRef | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                path=str(value["path"]),
                sha256=str(value["sha256"]),
                size_bytes=int(value["size_bytes"]),
                period_id=int(value["period_id"]),
                strategy=str(value["strategy"]),
                train_seconds=float(value.get("train_seconds", 0.0)),
                through=int(value.get("through") or value["period_id"]),
            )
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring malformed strategy checkpoint pointer %r", value)
            return None


def new_strategy(settings: Settings, name: str | None = None) -> Strategy:
    """A fresh strategy as the settings configure it: the defaults, or the log's own
    hyper-parameters from ``SMLREC_HYPER_FILE``."""
    name = name or settings.strategy
    dim, seed = settings.embed_dim, settings.seed
    given = {}
    if settings.hyper_file is not None:
        given = hp.read_hyper_file(settings.hyper_file, dim).methods
    return from_hyper(name, hp.for_live(name, given), dim=dim, seed=seed,
                      device=resolve_device(settings.device))


def save_checkpoint(
    artifacts: ArtifactStore,
    strategy: Strategy,
    period_id: int,
    train_seconds: float,
    tag: str = "",
    through: int = -1,
) -> CheckpointRef:
    """Write the strategy's state after ``period_id`` atomically (not yet pointed at);
    ``through``: the latest period it has learnt, if later."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "period_id": int(period_id),
        "strategy": strategy.name,
        "train_seconds": float(train_seconds),
        "created_at": time.time(),
        "state": strategy.state_dict(),
    }
    ref = artifacts.save(checkpoint_name(period_id, tag), payload)
    return CheckpointRef(
        path=ref.path,
        sha256=ref.sha256,
        size_bytes=ref.size_bytes,
        period_id=int(period_id),
        strategy=strategy.name,
        train_seconds=float(train_seconds),
        through=max(int(period_id), int(through)),
    )


def point_at(store: Store, ref: CheckpointRef, serving: bool = True) -> None:
    """Make ``ref`` the checkpoint its strategy resumes from (and, for the serving
    strategy, the one a restarted worker resumes from)."""
    if serving:
        store.put_state(STATE_KEY, ref.to_state())
    store.put_state(f"{STATE_KEY}:{ref.strategy}", ref.to_state())


def current_checkpoint(store: Store) -> CheckpointRef | None:
    return CheckpointRef.from_state(store.get_state(STATE_KEY))


def checkpoint_of(store: Store, strategy: str) -> CheckpointRef | None:
    """The newest checkpoint of ``strategy`` (served or challenger), if any."""
    ref = CheckpointRef.from_state(store.get_state(f"{STATE_KEY}:{strategy}"))
    if ref is None:  # written before strategies had pointers of their own
        current = current_checkpoint(store)
        ref = current if current is not None and current.strategy == strategy else None
    return ref


def restore_strategy(
    settings: Settings, artifacts: ArtifactStore, ref: CheckpointRef | None, name: str | None = None
) -> tuple[Strategy, CheckpointRef | None]:
    """The strategy ``name`` (default: the configured one) resumed from ``ref``, or a
    fresh one (with None) when there is no checkpoint, it belongs to another
    strategy, or it cannot be read."""
    strategy = new_strategy(settings, name)
    if ref is None:
        return strategy, None
    if ref.strategy != strategy.name:
        log.warning(
            "checkpoint %s is of strategy %r, configured %r: starting %r afresh",
            ref.path,
            ref.strategy,
            strategy.name,
            strategy.name,
        )
        return strategy, None
    try:
        payload = artifacts.load(ref.path, ref.sha256, ref.size_bytes)
        strategy.load_state_dict(payload["state"])
    except (ArtifactCorrupt, KeyError, TypeError, ValueError, RuntimeError) as error:
        log.error("cannot resume from checkpoint %s (%s): starting afresh", ref.path, error)
        return new_strategy(settings, name), None
    log.info("resumed strategy %r from %s (after period %d)", ref.strategy, ref.path, ref.period_id)
    return strategy, ref
