"""A client library for applications that use the service: :class:`Client` (blocking)
and :class:`AsyncClient` (coroutines) with the same methods, one per endpoint, typed
results, one exception class per way a request fails, and retries where a request
can safely be sent again. It needs httpx only, not the service's own packages."""

from smlrec.client.aio import AsyncClient
from smlrec.client.calls import NO_RETRY, RetryPolicy
from smlrec.client.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    SmlrecError,
    TooManyNew,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from smlrec.client.models import (
    Ingested,
    Interaction,
    ItemInfo,
    Job,
    ModelMetrics,
    ModelVersion,
    Period,
    PeriodScores,
    QueuedJob,
    Readiness,
    Recommendation,
    ScoredItem,
    SimilarItems,
    StoredInteraction,
    StrategyOverview,
    StrategyScore,
    UserDeleted,
)
from smlrec.client.sync import Client

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "Client",
    "Conflict",
    "Forbidden",
    "Ingested",
    "Interaction",
    "InvalidRequest",
    "ItemInfo",
    "Job",
    "ModelMetrics",
    "ModelVersion",
    "NotFound",
    "Period",
    "PeriodScores",
    "QueuedJob",
    "Readiness",
    "Recommendation",
    "RetryPolicy",
    "ScoredItem",
    "SimilarItems",
    "SmlrecError",
    "StoredInteraction",
    "StrategyOverview",
    "StrategyScore",
    "TooManyNew",
    "Unauthorized",
    "Unavailable",
    "UserDeleted",
    "WaitTimeout",
]
