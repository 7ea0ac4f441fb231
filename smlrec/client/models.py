"""What the client sends and what it reads back: the interaction row an application
posts, and a frozen dataclass for each body the API answers, parsed from its JSON.

Parsing reads the fields the contract names and ignores the others, so a service
that grows a field does not break a client written before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

FINAL_JOB_STATUSES = ("succeeded", "failed")


@dataclass(frozen=True)
class Interaction:
    """One interaction to post. ``timestamp``: Unix seconds or an RFC 3339 string
    (default: when the service receives it); ``event_id``: an idempotency key (a
    repeat is counted once, and it lets the client retry a post safely); ``type``
    and ``weight``: the service's defaults (``view``, 1) when left out."""

    user_id: str
    item_id: str
    timestamp: float | str | None = None
    event_id: str | None = None
    type: str | None = None
    weight: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as the API takes it, fields left unset omitted."""
        row: dict[str, Any] = {"user_id": self.user_id, "item_id": self.item_id}
        for name in ("timestamp", "event_id", "type", "weight"):
            value = getattr(self, name)
            if value is not None:
                row[name] = value
        return row


def row_json(row: Interaction | Mapping[str, Any]) -> dict[str, Any]:
    """An interaction row as JSON: a typed row, or a mapping sent as it is."""
    return row.to_json() if isinstance(row, Interaction) else dict(row)


@dataclass(frozen=True)
class Ingested:
    """What ``add_interactions`` stored: the totals over every request it made, and the
    open period the last one landed in (None when nothing was posted)."""

    accepted: int
    duplicates: int
    period_id: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Ingested:
        return cls(int(body["accepted"]), int(body["duplicates"]), body.get("period_id"))

    def __add__(self, other: Ingested) -> Ingested:
        return Ingested(self.accepted + other.accepted, self.duplicates + other.duplicates,
                        other.period_id if other.period_id is not None else self.period_id)


class ScoredItem(NamedTuple):
    """An item and its score: unpacks as ``(item_id, score)``."""

    item_id: str
    score: float


def _items(rows: list[Mapping[str, Any]]) -> tuple[ScoredItem, ...]:
    return tuple(ScoredItem(str(r["item_id"]), float(r["score"])) for r in rows)


@dataclass(frozen=True)
class Recommendation:
    """A user's top items by score, descending. ``fallback`` says how they were found
    when the model does not know the user (``"popularity"``, ``"fold_in"``), else None;
    ``model_version`` is None before any model."""

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: int | None
    fallback: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Recommendation:
        return cls(str(body["user_id"]), _items(body["items"]), body.get("model_version"),
                   body.get("fallback"))


@dataclass(frozen=True)
class SimilarItems:
    """Items most like ``item_id`` in the served model (cosine, descending)."""

    item_id: str
    items: tuple[ScoredItem, ...]
    model_version: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SimilarItems:
        return cls(str(body["item_id"]), _items(body["items"]), int(body["model_version"]))


@dataclass(frozen=True)
class QueuedJob:
    """A retrain the service accepted: follow it with ``job`` or ``wait_job``."""

    job_id: str
    period_id: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> QueuedJob:
        return cls(str(body["job_id"]), int(body["period_id"]))


@dataclass(frozen=True)
class Job:
    """A retrain job. ``status``: queued, running, succeeded or failed."""

    job_id: str
    status: str
    period_id: int
    model_version: int | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    kind: str | None = None
    created_at: float | None = None

    @property
    def finished(self) -> bool:
        """Succeeded or failed: the status will not change again."""
        return self.status in FINAL_JOB_STATUSES

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        return cls(str(body["job_id"]), str(body["status"]), int(body["period_id"]),
                   body.get("model_version"), body.get("error"), body.get("started_at"),
                   body.get("finished_at"), body.get("kind"), body.get("created_at"))


@dataclass(frozen=True)
class ModelMetrics:
    """A version scored on the period after the one it was trained on."""

    evaluated_on_period: int
    recall_at_20: float
    ndcg_at_20: float
    n_interactions: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelMetrics:
        return cls(int(body["evaluated_on_period"]), float(body["recall@20"]),
                   float(body["ndcg@20"]), int(body["n_interactions"]))


@dataclass(frozen=True)
class ModelVersion:
    """A model version; ``metrics`` is None until the next period has scored it."""

    version: int
    period_id: int
    strategy: str
    created_at: float
    active: bool
    train_seconds: float
    metrics: ModelMetrics | None
    pinned: bool = False
    artifact_removed: bool = False

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ModelVersion:
        metrics = body.get("metrics")
        return cls(int(body["version"]), int(body["period_id"]), str(body["strategy"]),
                   float(body["created_at"]), bool(body["active"]),
                   float(body["train_seconds"]),
                   ModelMetrics.from_json(metrics) if metrics is not None else None,
                   bool(body.get("pinned", False)), bool(body.get("artifact_removed", False)))


@dataclass(frozen=True)
class Period:
    """A period: open, closed, trained, or failed (its retrain gave up)."""

    period_id: int
    status: str
    n_interactions: int
    start: float | None
    end: float | None
    n_dropped: int = 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Period:
        return cls(int(body["period_id"]), str(body["status"]), int(body["n_interactions"]),
                   body.get("start"), body.get("end"), int(body.get("n_dropped", 0)))


@dataclass(frozen=True)
class StrategyScore:
    """A strategy's model scored on a period it had not trained on."""

    recall_at_20: float
    ndcg_at_20: float
    train_seconds: float
    version: int | None
    n_interactions: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StrategyScore:
        return cls(float(body["recall@20"]), float(body["ndcg@20"]),
                   float(body["train_seconds"]), body.get("version"), body.get("n_interactions"))


@dataclass(frozen=True)
class PeriodScores:
    period_id: int
    scores: Mapping[str, StrategyScore]


@dataclass(frozen=True)
class StrategyOverview:
    """The served strategy, the challengers, the promotion rule, and every strategy's
    score per evaluated period, newest first."""

    serving: str
    challengers: tuple[str, ...]
    promotion: str
    periods: tuple[PeriodScores, ...]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StrategyOverview:
        periods = tuple(
            PeriodScores(int(p["period_id"]),
                         {name: StrategyScore.from_json(s) for name, s in p["scores"].items()})
            for p in body["periods"])
        return cls(str(body["serving"]), tuple(body["challengers"]), str(body["promotion"]),
                   periods)


@dataclass(frozen=True)
class UserDeleted:
    user_id: str
    deleted_interactions: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> UserDeleted:
        return cls(str(body["user_id"]), int(body["deleted_interactions"]))


@dataclass(frozen=True)
class ItemInfo:
    """An item's metadata: its categories and whether it is hidden (never served)."""

    item_id: str
    categories: tuple[str, ...]
    hidden: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ItemInfo:
        return cls(str(body["item_id"]), tuple(str(c) for c in body.get("categories") or ()),
                   bool(body.get("hidden", False)))


@dataclass(frozen=True)
class StoredInteraction:
    """One line of the interaction export."""

    user_id: str
    item_id: str
    timestamp: float
    type: str
    weight: float
    event_id: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StoredInteraction:
        return cls(str(body["user_id"]), str(body["item_id"]), float(body["timestamp"]),
                   str(body["type"]), float(body["weight"]), body.get("event_id"))


@dataclass(frozen=True)
class Readiness:
    """``/readyz``: whether the database (and Redis, where configured) answer."""

    ready: bool
    database: str
    redis: str
    model_version: int | None
    failed_periods: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, body: Mapping[str, Any], ready: bool) -> Readiness:
        return cls(ready, str(body.get("database", "")), str(body.get("redis", "")),
                   body.get("model_version"), tuple(body.get("failed_periods", ())))
