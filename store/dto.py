"""Plain, immutable values the store takes and returns (never ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

PeriodStatus = Literal["open", "closed", "trained"]
JobKind = Literal["retrain", "bootstrap"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]
FinalJobStatus = Literal["succeeded", "failed"]


class NewInteraction(NamedTuple):
    """One interaction as a client reports it (external ids, event time in Unix seconds).
    A named tuple: batches of thousands are built per request, and JSON encodes
    one as its list of fields with no Python code per row."""

    user_id: str
    item_id: str
    ts: float
    event_id: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ingest call: rows stored, rows skipped as repeated event ids,
    and the open period they landed in."""

    accepted: int
    duplicates: int
    period_id: int


@dataclass(frozen=True)
class PeriodInfo:
    """A period: an inclusive range of interaction ids once closed.

    For the open period ``first_id``/``last_id`` are None and ``n_interactions``,
    ``start`` and ``end`` describe the interactions logged so far."""

    period_id: int
    status: PeriodStatus
    n_interactions: int
    start: float | None
    end: float | None
    first_id: int | None
    last_id: int | None
    opened_at: float | None = None
    closed_at: float | None = None


@dataclass(frozen=True, eq=False)
class PeriodArrays:
    """Interactions as dense indices, in ingestion order.

    ``n_users``/``n_items`` count every user/item seen up to the end of the range
    (indices are dense, so every index in ``users`` is below ``n_users``)."""

    users: np.ndarray  # (N,) int64
    items: np.ndarray  # (N,) int64
    timestamps: np.ndarray  # (N,) float64
    n_users: int
    n_items: int

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    kind: JobKind
    period_id: int
    status: JobStatus
    model_version: int | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    heartbeat_at: float | None


@dataclass(frozen=True)
class VersionInfo:
    """A trained model version. ``metrics`` is filled once the next period closes:
    ``{"evaluated_on_period", "recall@20", "ndcg@20", "n_interactions"}``."""

    version: int
    period_id: int
    strategy: str
    created_at: float
    path: str
    sha256: str
    size_bytes: int
    train_seconds: float
    n_users: int
    n_items: int
    metrics: dict[str, Any] | None = field(default=None, hash=False)
    active: bool = False


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lies (relative to the artifact root) and its checksum."""

    path: str
    sha256: str
    size_bytes: int
