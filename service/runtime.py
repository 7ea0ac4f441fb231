"""Everything a running app holds, made in the lifespan and kept on
``app.state.runtime`` (never in module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from service.batcher import ScoringBatcher
from service.holder import ModelHolder
from service.ingest import Ingestor, OpenPeriod
from service.metrics import ServiceMetrics
from service.recent import RecentInteractions
from service.recommender import Recommender
from smlrec.settings import Settings
from store import ArtifactStore, Bus, Store


@dataclass
class Runtime:
    settings: Settings
    admin_token: str
    store: Store
    artifacts: ArtifactStore
    bus: Bus
    metrics: ServiceMetrics
    holder: ModelHolder
    recommender: Recommender
    ingestor: Ingestor
    open_period: OpenPeriod
    recent: RecentInteractions
    batcher: ScoringBatcher
    retrain_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def distributed(self) -> bool:
        return bool(self.settings.redis_url)
