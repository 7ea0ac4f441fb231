"""POST /v1/interactions: log interactions (1 to 10,000 per request)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.exceptions import RequestValidationError

from service.body import json_body, openapi_body
from service.deps import IngestorDep, MetricsDep, RecentDep, require_client_key
from service.schemas import ErrorBody, IngestResponse, InteractionBatch, TooManyInteractions
from store import NewInteraction

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
        503: {"model": ErrorBody, "description": "Not durable now; nothing was stored. "
              "Retry after the Retry-After header's seconds"},
    },
)
def post_interactions(
    batch: Annotated[InteractionBatch, Depends(read_batch)],
    ingestor: IngestorDep,
    metrics: MetricsDep,
    recent: RecentDep,
) -> IngestResponse:
    """Store the interactions durably (202 once they are); repeated ``event_id``s
    are counted once, as duplicates. All or nothing."""
    received = time.time()
    rows = [
        NewInteraction(i.user_id, i.item_id,
                       i.timestamp if i.timestamp is not None else received, i.event_id)
        for i in batch.interactions
    ]
    result = ingestor.ingest(rows)
    if result.accepted:
        recent.add(rows)  # this replica excludes them from recommendations at once
    metrics.interactions_accepted.inc(result.accepted)
    metrics.interactions_duplicate.inc(result.duplicates)
    return IngestResponse(
        accepted=result.accepted, duplicates=result.duplicates, period_id=result.period_id
    )
