"""``GET /v1/admin/interactions/export``: every stored interaction as NDJSON.

The log is read in pages by id (``Store.interactions_page``) and each page is
written as it comes, so memory stays one page whatever the log's length. The
export covers the rows stored when the request came in; the first page is read
before the answer starts, so a database that does not answer is a 503, not a
truncated 200. A failure later aborts the stream (the client sees it cut short,
never a short export that looks whole).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

import orjson
from fastapi import Query
from fastapi.responses import StreamingResponse

from service.deps import StoreDep, admin_router
from service.interaction_schemas import EXPORT_EXAMPLE, ExportedInteraction
from service.schemas import ErrorBody
from store import Store, StoredInteraction, StoreUnavailable

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
PAGE_ROWS = 5_000  # interactions per database read (and per chunk written)

router = admin_router()

def _lines(rows: list[StoredInteraction]) -> bytes:
    return b"".join(
        orjson.dumps({"user_id": r.user_id, "item_id": r.item_id, "timestamp": r.ts,
                      "type": r.type, "weight": r.weight, "event_id": r.event_id}) + b"\n"
        for r in rows)


def _pages(store: Store, first: list[StoredInteraction], through: int,
           since: float | None) -> Iterator[bytes]:
    page = first
    while page:
        yield _lines(page)
        if len(page) < PAGE_ROWS:
            return
        try:
            page = store.interactions_page(page[-1].id, through, PAGE_ROWS, since)
        except StoreUnavailable:
            log.error("interaction export cut short after id %d: database unavailable",
                      page[-1].id)
            raise


@router.get(
    "/interactions/export",
    response_class=StreamingResponse,
    summary="Export the stored interactions (NDJSON)",
    responses={
        200: {"description": "One stored interaction per line, in the order they were "
              "stored (oldest first)",
              "content": {NDJSON: {"schema": ExportedInteraction.model_json_schema(),
                                   "example": EXPORT_EXAMPLE}}},
        503: {"model": ErrorBody, "description": "The database did not answer"},
    },
)
def export_interactions(
    store: StoreDep,
    since: Annotated[float | None, Query(
        ge=0, allow_inf_nan=False,
        description="Only interactions stamped at or after this time (Unix seconds)",
        examples=[881250949])] = None,
) -> StreamingResponse:
    """Every interaction stored when the request came in, one JSON object per line
    (``user_id``, ``item_id``, ``timestamp``, ``type``, ``weight``, ``event_id``),
    in the order they were stored; ``since`` keeps those stamped at or after it.
    Streamed: read and written a page at a time."""
    through = store.last_interaction_id()
    first = store.interactions_page(0, through, PAGE_ROWS, since)
    return StreamingResponse(_pages(store, first, through, since), media_type=NDJSON)
