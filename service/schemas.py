"""Request and response bodies of the HTTP API (v1): the contract clients are written against.

Every model carries an OpenAPI example. An interaction batch longer than
``MAX_INTERACTIONS`` fails on its length before its items are looked at, so the
ingestion route refuses it with 413 even when some items are malformed.

Interaction batches are validated straight from JSON (service.body), so their
fields use pydantic's native checks: a Python validator per row would cost
more than the rest of the validation together.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.config import JsonDict
from pydantic_core import core_schema

MAX_ID_LENGTH = 128
MAX_INTERACTIONS = 10_000
MAX_K = 1000
DEFAULT_K = 20
MAX_BATCH_USERS = 1000

# NUL is the one character PostgreSQL cannot store in text: refused everywhere.
ID_PATTERN = "^[^\\x00]+$"
ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


class TooManyInteractions(Exception):
    """A batch holds more interactions than one request may carry (answered 413)."""

    def __init__(self) -> None:
        super().__init__(f"more than {MAX_INTERACTIONS} interactions in one request")


TIMESTAMP_HELP = (
    "timestamp must be Unix seconds (a finite number >= 0) or an RFC 3339 string with "
    "a time zone, e.g. 1997-12-04T15:55:49Z"
)


def parse_rfc3339(value: str) -> float:
    """Unix seconds (>= 0) of an RFC 3339 date and time with a time zone."""
    if not _RFC3339.match(value):
        raise ValueError("not RFC 3339 with a time zone")
    seconds = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    if seconds < 0:
        raise ValueError("before 1970-01-01T00:00:00Z")
    return seconds


def _timestamp_schema(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """A number checked natively (strict: no booleans, no numeric strings), else
    a string through :func:`parse_rfc3339`; one error message for every failure."""
    seconds = core_schema.float_schema(strict=True, ge=0, allow_inf_nan=False)
    text = core_schema.no_info_after_validator_function(
        parse_rfc3339, core_schema.str_schema(strict=True))
    return core_schema.nullable_schema(core_schema.union_schema(
        [seconds, text], mode="left_to_right", custom_error_type="timestamp",
        custom_error_message=TIMESTAMP_HELP))


Timestamp = Annotated[
    float | None,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "format": "date-time"},
                {"type": "null"},
            ],
            "description": "Unix seconds (int or float, >= 0) or an RFC 3339 string; "
            "default: time of receipt",
            "examples": [881250949, "1997-12-04T15:55:49Z"],
        }
    ),
]


# ---- interactions -----------------------------------------------------------


class InteractionIn(BaseModel):
    """One interaction of a user with an item."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "u42", "item_id": "i7", "timestamp": 881250949, "event_id": "e-1"}
            ]
        }
    )

    user_id: ExternalId = Field(description="External user id", examples=["u42"])
    item_id: ExternalId = Field(description="External item id", examples=["i7"])
    timestamp: Timestamp = None
    event_id: ExternalId | None = Field(
        default=None,
        description="Optional idempotency key: a repeated event_id is counted once",
        examples=["e-1"],
    )


class InteractionBatch(BaseModel):
    """1 to 10,000 interactions (more: 413)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "interactions": [
                        {"user_id": "u42", "item_id": "i7", "timestamp": 881250949,
                         "event_id": "e-1"},
                        {"user_id": "u42", "item_id": "i9",
                         "timestamp": "1997-12-04T15:55:49Z"},
                    ]
                }
            ]
        }
    )

    interactions: list[InteractionIn] = Field(min_length=1, max_length=MAX_INTERACTIONS)


class IngestResponse(BaseModel):
    """Interactions made durable, repeats skipped, and the period they landed in."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"accepted": 998, "duplicates": 2, "period_id": 3}]}
    )

    accepted: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    period_id: int | None = Field(
        description="The open period (null only if the database was never reachable "
        "since start in distributed mode)"
    )


# ---- recommendations --------------------------------------------------------


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(
        description="Model score (U[u]·V + item bias). In a popularity fallback: N - rank "
        "in the popularity list of N items (higher is more popular)"
    )


class SimilarItems(BaseModel):
    """Items most like one item in the served model, by cosine descending, at most k."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "item_id": "i9", "items": [{"item_id": "i3", "score": 0.91}], "model_version": 5}]})

    item_id: str
    items: list[RecommendedItem] = Field(
        description="Each with its cosine to the item, in [-1, 1]")
    model_version: int = Field(description="Version of the model the vectors come from")


class Recommendations(BaseModel):
    """Top items for one user, by score descending, at most k, no duplicates."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u42",
                    "items": [{"item_id": "i9", "score": 3.21}, {"item_id": "i3", "score": 2.87}],
                    "model_version": 5,
                    "fallback": None,
                }
            ]
        }
    )

    user_id: str
    items: list[RecommendedItem]
    model_version: int | None = Field(description="Version of the model in use (null: none)")
    fallback: Literal["popularity"] | None = Field(
        description='"popularity" for a user the model does not know, or before any model'
    )


class BatchRecommendationRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"user_ids": ["u1", "u2"], "k": 20, "exclude_seen": True}]
        }
    )

    user_ids: list[ExternalId] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    k: int = Field(default=DEFAULT_K, ge=1, le=MAX_K)
    exclude_seen: bool = True


class BatchRecommendations(BaseModel):
    """One result per requested user, in the order of the request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {"user_id": "u1", "items": [{"item_id": "i9", "score": 3.21}],
                         "model_version": 5, "fallback": None},
                        {"user_id": "u2", "items": [{"item_id": "i1", "score": 1000.0}],
                         "model_version": 5, "fallback": "popularity"},
                    ]
                }
            ]
        }
    )

    results: list[Recommendations]


# ---- admin ------------------------------------------------------------------


class RetrainAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"job_id": "5f0c2b1e9a7d4c3b8e6f1a2b3c4d5e6f",
                                         "period_id": 3}]}
    )

    job_id: str
    period_id: int


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "5f0c2b1e9a7d4c3b8e6f1a2b3c4d5e6f",
                    "status": "succeeded",
                    "period_id": 3,
                    "model_version": 4,
                    "error": None,
                    "started_at": 1717000000.0,
                    "finished_at": 1717000042.5,
                    "kind": "retrain",
                    "created_at": 1717000000.0,
                }
            ]
        }
    )

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    period_id: int
    model_version: int | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    kind: str
    created_at: float


_METRICS_EXAMPLE: JsonDict = {"evaluated_on_period": 5, "recall@20": 0.41, "ndcg@20": 0.19,
                    "n_interactions": 5000}
_MODEL_EXAMPLE: JsonDict = {
    "version": 5,
    "period_id": 4,
    "strategy": "sml",
    "created_at": 1717000042.5,
    "active": True,
    "train_seconds": 38.2,
    "metrics": _METRICS_EXAMPLE,
}
_PERIOD_EXAMPLE: JsonDict = {"period_id": 3, "status": "trained", "n_interactions": 5000,
                   "start": 881250949.0, "end": 881900000.0}


class ModelMetrics(BaseModel):
    """The version scored on the period after it (the sampled metric of docs/protocol.md)."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="allow",
        json_schema_extra={"examples": [_METRICS_EXAMPLE]},
    )

    evaluated_on_period: int
    recall_at_20: float = Field(alias="recall@20", serialization_alias="recall@20")
    ndcg_at_20: float = Field(alias="ndcg@20", serialization_alias="ndcg@20")
    n_interactions: int


class ModelOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_MODEL_EXAMPLE]})

    version: int
    period_id: int
    strategy: str
    created_at: float
    active: bool
    train_seconds: float
    metrics: ModelMetrics | None
    pinned: bool = Field(default=False, description="Kept whatever the retention says")
    artifact_removed: bool = Field(
        default=False, description="The retention deleted its artifact: it cannot be activated")


class ModelList(BaseModel):
    """Every model version, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"models": [_MODEL_EXAMPLE]}]})

    models: list[ModelOut]


class PeriodOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PERIOD_EXAMPLE]})

    period_id: int
    status: Literal["open", "closed", "trained", "failed"] = Field(
        description="failed: its retrain gave up (retry: POST /v1/admin/periods/{id}/retrain)")
    n_interactions: int
    start: float | None = Field(description="Earliest event time in the period (Unix seconds)")
    end: float | None = Field(description="Latest event time in the period (Unix seconds)")
    n_dropped: int = Field(
        default=0, description="Interactions dropped by the caps on new users and items "
        "(present when above 0)")


class PeriodList(BaseModel):
    """Every period, oldest first (the open one last)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"periods": [_PERIOD_EXAMPLE]}]})

    periods: list[PeriodOut]


# ---- operations and errors ----------------------------------------------------


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "database": "ok", "redis": "not configured",
                 "model_version": 5, "retrain": "ok", "failed_periods": []}
            ]
        }
    )

    status: Literal["ready"] = "ready"
    database: str
    redis: str
    model_version: int | None
    retrain: str = Field(
        default="ok", description="Present when some periods' retrains gave up: which, and "
        "how to retry them (serving goes on)")
    failed_periods: list[int] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """FastAPI's error shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "what went wrong"}]})

    detail: Any
