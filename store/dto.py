"""Plain, immutable values the store takes and returns (never ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

PeriodStatus = Literal["open", "closed", "trained", "failed"]
JobKind = Literal["retrain", "bootstrap"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]
FinalJobStatus = Literal["succeeded", "failed"]


DEFAULT_TYPE = "view"


class NewInteraction(NamedTuple):
    """One interaction as a client reports it (external ids, event time in Unix seconds,
    what kind of event it was and how much it counts in training).
    A named tuple: batches of thousands are built per request, and JSON encodes
    one as its list of fields with no Python code per row."""

    user_id: str
    item_id: str
    ts: float
    event_id: str | None = None
    type: str = DEFAULT_TYPE
    weight: float = 1.0


class StoredInteraction(NamedTuple):
    """One stored interaction with its external ids, as an export gives it back."""

    id: int  # the ingestion order
    user_id: str
    item_id: str
    ts: float
    type: str
    weight: float
    event_id: str | None


@dataclass(frozen=True)
class Cut:
    """A period cut written into the interaction stream (distributed mode): the
    worker closes the open period where it reads it, after storing every row
    before it. ``job_id``: the job an admin request queued; ``period_id``: close
    only that period (a cut of the time rule, void once it is closed)."""

    job_id: str | None = None
    period_id: int | None = None


@dataclass(frozen=True)
class Caps:
    """At most this many new users / new items per period (None: no cap)."""

    users: int | None = None
    items: int | None = None


@dataclass(frozen=True)
class IngestResult:
    """Outcome of one ingest call: rows stored, rows skipped as repeated event ids,
    and the open period they landed in."""

    accepted: int
    duplicates: int
    period_id: int
    dropped: int = 0  # rows left out because they would have passed a cap


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
    n_dropped: int = 0  # rows a cap on new users or items refused while it was open


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
    # (N,) float64, each interaction's weight times its type's (read only when asked
    # for, with the type weights); None: every interaction weighs 1
    weights: np.ndarray | None = None

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
    not_before: float | None = None  # a queued retry waits until then


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
    pinned: bool = False  # kept whatever the retention says
    removed_at: float | None = None  # when retention deleted its artifact


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lies (relative to the artifact root) and its checksum."""

    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class StrategyScoreInfo:
    """One strategy's model scored on a closed period it had not trained on."""

    period_id: int
    strategy: str
    version: int | None
    recall: float
    ndcg: float
    n_interactions: int
    train_seconds: float
    created_at: float


@dataclass(frozen=True)
class ItemInfo:
    """An item's metadata: its categories (as given, in order) and whether it is
    hidden; ``revision``: the write that stored it (0: never written)."""

    item_id: str
    categories: tuple[str, ...] = ()
    hidden: bool = False
    revision: int = 0
