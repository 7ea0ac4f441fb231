"""Everything a running app holds, made in the lifespan and kept on
``app.state.runtime`` (never in module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from engine.batcher import ScoringBatcher
from engine.catalog import Catalog
from engine.forget import Forgotten
from engine.holder import ModelHolder
from engine.metrics import ServiceMetrics
from engine.recent import RecentInteractions
from engine.recommender import Recommender
from service.ingest import Ingestor, OpenPeriod
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
    forgotten: Forgotten
    catalog: Catalog
    retrain_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def distributed(self) -> bool:
        return bool(self.settings.redis_url)
