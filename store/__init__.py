"""Storage: the database (interactions, periods, jobs, model versions), the
model-artifact store and the message bus."""

from store.artifacts import ArtifactStore, pack_ids, unpack_ids
from store.bus import Bus, InProcessBus, LeaderLock, RedisBus, make_bus
from store.dto import (
    ArtifactRef,
    IngestResult,
    JobInfo,
    NewInteraction,
    PeriodArrays,
    PeriodInfo,
    VersionInfo,
)
from store.errors import ArtifactCorrupt, BusUnavailable, StoreUnavailable
from store.repository import Store

__all__ = [
    "ArtifactCorrupt",
    "ArtifactRef",
    "ArtifactStore",
    "Bus",
    "BusUnavailable",
    "InProcessBus",
    "IngestResult",
    "JobInfo",
    "LeaderLock",
    "NewInteraction",
    "PeriodArrays",
    "PeriodInfo",
    "RedisBus",
    "Store",
    "StoreUnavailable",
    "VersionInfo",
    "make_bus",
    "pack_ids",
    "unpack_ids",
]
