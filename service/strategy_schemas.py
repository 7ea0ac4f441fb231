"""Request and response bodies of the strategy endpoints (challengers scored side
by side, and the choice of the served strategy)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

_SCORE_EXAMPLE: JsonDict = {"recall@20": 0.61, "ndcg@20": 0.30, "train_seconds": 1.9}
_OVERVIEW_EXAMPLE: JsonDict = {
    "serving": "sml",
    "challengers": ["fine_tune"],
    "promotion": "manual",
    "periods": [{"period_id": 4, "scores": {
        "sml": {**_SCORE_EXAMPLE, "version": 7, "n_interactions": 5000},
        "fine_tune": {"recall@20": 0.59, "ndcg@20": 0.29, "train_seconds": 0.8,
                      "version": 8, "n_interactions": 5000},
    }}],
}


class StrategyScore(BaseModel):
    """A strategy's model, trained on the periods before, scored on this one."""

    model_config = ConfigDict(populate_by_name=True)

    recall_at_20: float = Field(alias="recall@20", serialization_alias="recall@20")
    ndcg_at_20: float = Field(alias="ndcg@20", serialization_alias="ndcg@20")
    train_seconds: float = Field(description="The boundary that trained the model scored")
    version: int | None = Field(default=None, description="The model version scored")
    n_interactions: int = Field(description="Interactions of the period scored on")


class PeriodScores(BaseModel):
    period_id: int = Field(description="The period every strategy's model was scored on")
    scores: dict[str, StrategyScore]


class StrategyOverview(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_OVERVIEW_EXAMPLE]})

    serving: str = Field(description="The strategy whose models are served")
    challengers: list[str] = Field(description="Trained and scored beside it, not served")
    promotion: str = Field(description="'manual' or 'auto:N'")
    periods: list[PeriodScores] = Field(description="Newest first")


class StrategyChoice(BaseModel):
    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"strategy": "fine_tune"}]})

    strategy: str = Field(min_length=1, max_length=32, examples=["fine_tune"])
