"""The bodies of ``POST /v1/interactions``, and the lines of the interaction export.

An interaction batch longer than ``MAX_INTERACTIONS`` fails on its length before
its items are looked at, so the ingestion route refuses it with 413 even when
some items are malformed. A field the models do not name is refused (422), in a
row as in the batch: a misspelt field is an error, not a silent default.

Interaction batches are validated straight from JSON (service.body), so their
fields use pydantic's native checks: a Python validator per row would cost
more than the rest of the validation together.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

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

from service.schemas import ID_PATTERN, ExternalId

MAX_INTERACTIONS = 10_000
MAX_TYPE_LENGTH = 32
MAX_WEIGHT = 100.0
DEFAULT_TYPE = "view"
InteractionType = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TYPE_LENGTH, pattern=ID_PATTERN)
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
    """One interaction of a user with an item. A field not named here is refused (422)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "u42", "item_id": "i7", "timestamp": 881250949, "event_id": "e-1"},
                {"user_id": "u42", "item_id": "i9", "type": "purchase", "weight": 2.5},
            ]
        },
    )

    user_id: ExternalId = Field(description="External user id", examples=["u42"])
    item_id: ExternalId = Field(description="External item id", examples=["i7"])
    timestamp: Timestamp = None
    event_id: ExternalId | None = Field(
        default=None,
        description="Optional idempotency key: a repeated event_id is counted once",
        examples=["e-1"],
    )
    type: InteractionType = Field(
        default=DEFAULT_TYPE,
        description="What kind of event it was (any name up to 32 characters; "
        "SMLREC_TYPE_WEIGHTS can weigh each kind in training)",
        examples=["view", "like", "purchase"],
    )
    weight: float = Field(
        default=1.0, gt=0, le=MAX_WEIGHT, strict=True, allow_inf_nan=False,
        description="How much it counts in training (above 0, at most 100), "
        "before its type's weight scales it",
        examples=[1, 2.5],
    )


class InteractionBatch(BaseModel):
    """1 to 10,000 interactions (more: 413). A field besides ``interactions`` is refused."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "interactions": [
                        {"user_id": "u42", "item_id": "i7", "timestamp": 881250949,
                         "event_id": "e-1"},
                        {"user_id": "u42", "item_id": "i9",
                         "timestamp": "1997-12-04T15:55:49Z", "type": "like", "weight": 3},
                    ]
                }
            ]
        },
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


EXPORT_EXAMPLE: JsonDict = {"user_id": "u42", "item_id": "i7", "timestamp": 881250949.0,
                            "type": "like", "weight": 2.5, "event_id": "e-1"}


class ExportedInteraction(BaseModel):
    """One line of ``GET /v1/admin/interactions/export``: a stored interaction."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXPORT_EXAMPLE]})

    user_id: str
    item_id: str
    timestamp: float = Field(description="Event time, Unix seconds")
    type: str
    weight: float
    event_id: str | None = Field(description="null when the client sent none (embedded "
                                 "mode), else the id it was stored under")
