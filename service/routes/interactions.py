"""POST /v1/interactions: log interactions (1 to 10,000 per request)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError

from service.body import json_body, openapi_body
from service.deps import IngestorDep, MetricsDep, RecentDep, SettingsDep, require_client_key
from service.interaction_schemas import IngestResponse, InteractionBatch, TooManyInteractions
from service.schemas import ErrorBody
from store import CapExceeded, NewInteraction

# A full batch of 10,000 interactions with 128-character ids is about 5 MB.
MAX_BODY_BYTES = 16 * 1024 * 1024

_parse_batch = json_body(InteractionBatch)


async def read_batch(request: Request) -> InteractionBatch:
    """The body as a batch; too long (whatever its items) is 413, not 422."""
    try:
        return await _parse_batch(request)
    except RequestValidationError as error:
        if any(e["type"] == "too_long" and tuple(e["loc"]) == ("body", "interactions")
               for e in error.errors()):
            raise TooManyInteractions() from None
        raise


MAX_REPORTED_ROWS = 20  # rows named in one 422


def _check_clock(batch: InteractionBatch, now: float, skew: float) -> None:
    """422 naming the rows stamped later than ``now + skew``."""
    limit = now + skew
    ahead = [(n, i.timestamp) for n, i in enumerate(batch.interactions)
             if i.timestamp is not None and i.timestamp > limit]
    if ahead:
        raise RequestValidationError([{
            "type": "timestamp_ahead",
            "loc": ("body", "interactions", n, "timestamp"),
            "msg": f"timestamp is ahead of the server's clock by more than the {skew:g} s "
                   "allowed (SMLREC_MAX_CLOCK_SKEW_SECONDS)",
            "input": ts,
        } for n, ts in ahead[:MAX_REPORTED_ROWS]])


router = APIRouter(prefix="/v1", tags=["interactions"], dependencies=[Depends(require_client_key)])


@router.post(
    "/interactions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestResponse,
    summary="Log interactions",
    max_body_size=MAX_BODY_BYTES,
    openapi_extra=openapi_body(InteractionBatch),
    responses={
        401: {"model": ErrorBody, "description": "X-API-Key missing (when a key is set)"},
        403: {"model": ErrorBody, "description": "Wrong X-API-Key"},
        413: {"model": ErrorBody, "description": "More than 10,000 interactions"},
        429: {"model": ErrorBody, "description": "The batch would bring the open period more "
              "new users or items than SMLREC_MAX_NEW_USERS_PER_PERIOD / "
              "SMLREC_MAX_NEW_ITEMS_PER_PERIOD allow (embedded mode); nothing was stored"},
        503: {"model": ErrorBody, "description": "Not durable now; nothing was stored. "
              "Retry after the Retry-After header's seconds"},
    },
)
def post_interactions(
    batch: Annotated[InteractionBatch, Depends(read_batch)],
    ingestor: IngestorDep,
    metrics: MetricsDep,
    recent: RecentDep,
    settings: SettingsDep,
) -> IngestResponse:
    """Store the interactions durably (202 once they are); repeated ``event_id``s
    are counted once, as duplicates. All or nothing. Each may say what kind of
    event it was (``type``, default ``view``) and how much it counts in training
    (``weight``, default 1); a field the schema does not name is refused (422).
    A timestamp more than ``SMLREC_MAX_CLOCK_SKEW_SECONDS`` ahead of the server's
    clock is refused (422, naming the row); an old one is welcome (it joins the
    open period)."""
    received = time.time()
    _check_clock(batch, received, settings.max_clock_skew_seconds)
    rows = [
        NewInteraction(i.user_id, i.item_id,
                       i.timestamp if i.timestamp is not None else received, i.event_id,
                       i.type, i.weight)
        for i in batch.interactions
    ]
    try:
        result = ingestor.ingest(rows)
    except CapExceeded as error:
        metrics.interactions_refused.inc(len(rows))
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail=str(error)) from None
    if result.accepted:
        recent.add(rows)  # this replica excludes them from recommendations at once
    metrics.interactions_accepted.inc(result.accepted)
    metrics.interactions_duplicate.inc(result.duplicates)
    return IngestResponse(
        accepted=result.accepted, duplicates=result.duplicates, period_id=result.period_id
    )
