"""Item metadata (admin): ``PUT /v1/items/{item_id}`` stores an item's categories
and whether it is hidden; ``GET`` reads them back. Every replica applies a change
within ``SMLREC_SWAP_POLL_SECONDS`` (the one that stored it, at once), with no
new model version."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.deps import RuntimeDep, admin_router
from service.schemas import ID_PATTERN, MAX_ID_LENGTH, ErrorBody, ItemOut, ItemUpdate
from store import ItemInfo

log = logging.getLogger(__name__)



class JsonBodyRoute(APIRoute):
    """A route whose body must be JSON: one that is not (a syntax error) is 400, and
    a JSON body that does not fit the model stays 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                if any(e.get("type") == "json_invalid" for e in error.errors()):
                    raise HTTPException(status.HTTP_400_BAD_REQUEST,
                                        detail="the body is not valid JSON") from None
                raise

        return handle


router = admin_router("/v1/items", ["items"], route_class=JsonBodyRoute)

ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                             examples=["i9"])]


def _out(info: ItemInfo) -> ItemOut:
    return ItemOut(item_id=info.item_id, categories=list(info.categories), hidden=info.hidden)


@router.put(
    "/{item_id}",
    response_model=ItemOut,
    summary="Set an item's categories and whether it is hidden",
    responses={400: {"model": ErrorBody, "description": "The body cannot be parsed as JSON"}},
)
def put_item(runtime: RuntimeDep, item_id: ItemId, update: ItemUpdate) -> ItemOut:
    """Replaces the item's metadata. An item no interaction has named yet is stored
    too (a catalogue can be loaded first); it is recommended once a model knows it.
    A hidden item is never recommended, nor listed as similar to another; a
    category filter returns only the category's items."""
    info = runtime.store.put_item(item_id, update.categories, update.hidden)
    runtime.catalog.written(runtime.holder.current)
    log.info("item metadata stored (revision %d, %d categories, hidden %s)",
             info.revision, len(info.categories), info.hidden)
    return _out(info)


@router.get(
    "/{item_id}",
    response_model=ItemOut,
    summary="An item's categories and whether it is hidden",
    responses={404: {"model": ErrorBody, "description": "Neither described nor ever seen"}},
)
def get_item(runtime: RuntimeDep, item_id: ItemId) -> ItemOut:
    """An item seen in interactions but never described has no categories and is
    not hidden."""
    info = runtime.store.item(item_id)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown item {item_id!r}")
    return _out(info)
