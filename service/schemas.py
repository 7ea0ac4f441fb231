"""Request and response bodies of the HTTP API (v1): the contract clients are written against.

Every model carries an OpenAPI example. The bodies of ``POST /v1/interactions``
are in :mod:`service.interaction_schemas`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator
from pydantic.config import JsonDict

from store.model_artifact import POPULAR_SIZE

MAX_ID_LENGTH = 128
MAX_K = 1000
DEFAULT_K = 20
MAX_BATCH_USERS = 1000

# NUL is the one character PostgreSQL cannot store in text: refused everywhere.
ID_PATTERN = "^[^\\x00]+$"
ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)
]
MAX_CATEGORY_LENGTH = 64
MAX_CATEGORIES = 100
Category = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_CATEGORY_LENGTH, pattern=ID_PATTERN)
]
CATEGORY_FILTER = (
    "Only items of this category (unknown: no items). For a user the model does not "
    f"know, the category's items among the {POPULAR_SIZE} most popular")


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
    fallback: Literal["popularity", "fold_in"] | None = Field(
        description='"fold_in" for a user the model does not know, answered from their '
        'interactions logged since; "popularity" for one without any (or before any model)'
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
    category: Category | None = Field(default=None, description=CATEGORY_FILTER,
                                      examples=["jazz"])


# ---- items ------------------------------------------------------------------


class ItemUpdate(BaseModel):
    """An item's metadata, replacing what it had (a field left out takes its default)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"categories": ["jazz"], "hidden": False}]})

    categories: list[Category] = Field(
        default_factory=list, max_length=MAX_CATEGORIES,
        description=f"Names of 1 to {MAX_CATEGORY_LENGTH} characters, at most "
        f"{MAX_CATEGORIES}, none repeated")
    hidden: StrictBool = Field(default=False, description="Never recommend it while true")

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: list[str]) -> list[str]:
        if len(set(categories)) != len(categories):
            raise ValueError("categories must not repeat")
        return categories


class ItemOut(BaseModel):
    """An item's stored metadata."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "i9", "categories": ["jazz"], "hidden": False}]})

    item_id: str
    categories: list[str]
    hidden: bool


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
