"""Storage: the database (interactions, periods, jobs, model versions), the
model-artifact store and the message bus."""

from store._queue import QueueBusy
from store.artifacts import ArtifactStore, pack_ids, unpack_ids
from store.bus import Bus, InProcessBus, LeaderLock, RedisBus, make_bus
from store.dto import (
    ArtifactRef,
    Caps,
    Cut,
    IngestResult,
    ItemInfo,
    JobInfo,
    NewInteraction,
    PeriodArrays,
    PeriodInfo,
    StoredInteraction,
    StrategyScoreInfo,
    VersionInfo,
)
from store.errors import ArtifactCorrupt, BusUnavailable, StoreUnavailable
from store.model_artifact import MODEL_FORMAT, ModelArtifact, popular_items
from store.repository import CapExceeded, Store

__all__ = [
    "MODEL_FORMAT",
    "ArtifactCorrupt",
    "ArtifactRef",
    "ArtifactStore",
    "Bus",
    "BusUnavailable",
    "CapExceeded",
    "Caps",
    "Cut",
    "InProcessBus",
    "IngestResult",
    "ItemInfo",
    "JobInfo",
    "LeaderLock",
    "ModelArtifact",
    "NewInteraction",
    "PeriodArrays",
    "PeriodInfo",
    "QueueBusy",
    "RedisBus",
    "Store",
    "StoreUnavailable",
    "StoredInteraction",
    "StrategyScoreInfo",
    "VersionInfo",
    "make_bus",
    "pack_ids",
    "popular_items",
    "unpack_ids",
]
