"""Top-K recommendations for one user and for a batch of users; items like an item.

The single-user route runs on the event loop and awaits the scoring batcher
(concurrent requests share one matrix product); most of its requests are
answered before they reach it, by the same code, in ``service.fastpath``. The
batch route is one ``top_k`` call on the thread pool."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import Response

from engine.similar import similar_items
from service.deps import HolderDep, RecommenderDep, RuntimeDep, require_client_key
from service.runtime import Runtime
from service.schemas import (
    CATEGORY_FILTER,
    DEFAULT_K,
    ID_PATTERN,
    MAX_CATEGORY_LENGTH,
    MAX_ID_LENGTH,
    MAX_K,
    BatchRecommendationRequest,
    BatchRecommendations,
    ErrorBody,
    Recommendations,
    RecommendedItem,
    SimilarItems,
)

# 1,000 ids of 128 characters, each written as \uXXXX escapes, fit in 1 MiB.
MAX_BATCH_BODY_BYTES = 1024 * 1024

router = APIRouter(prefix="/v1", tags=["recommendations"],
                   dependencies=[Depends(require_client_key)])

_AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "X-API-Key missing (when a key is set)"},
    403: {"model": ErrorBody, "description": "Wrong X-API-Key"},
}


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    summary="Recommendations for one user",
    responses=_AUTH_ERRORS,
)
async def user_recommendations(
    request: Request,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                 examples=["u42"])],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items", examples=[20])] = (
        DEFAULT_K
    ),
    exclude_seen: Annotated[
        bool, Query(description="Drop items the user has interacted with")
    ] = True,
    category: Annotated[
        str | None, Query(min_length=1, max_length=MAX_CATEGORY_LENGTH, pattern=ID_PATTERN,
                          description=CATEGORY_FILTER, examples=["jazz"])
    ] = None,
) -> Response:
    """Items by score, descending, at most ``k``; hidden items never. A user the
    model does not know (or any user before the first model) gets the most popular
    items, with ``"fallback": "popularity"``."""
    runtime: Runtime = request.app.state.runtime  # the hot path: no dependency chain
    result = await runtime.recommender.recommend_one(
        runtime.holder.current, user_id, k, exclude_seen, category
    )
    return Response(result.render(), media_type="application/json")


@router.post(
    "/recommendations",
    response_model=BatchRecommendations,
    max_body_size=MAX_BATCH_BODY_BYTES,
    summary="Recommendations for up to 1000 users",
    responses={
        **_AUTH_ERRORS,
        400: {"model": ErrorBody, "description": "The body cannot be parsed as JSON"},
        413: {"model": ErrorBody, "description": "Body larger than 1 MiB"},
    },
)
def batch_recommendations(
    request: BatchRecommendationRequest, holder: HolderDep, recommender: RecommenderDep
) -> Response:
    """One result per user id, in the order given, all from the same model version."""
    results = recommender.recommend(
        holder.current, request.user_ids, request.k, request.exclude_seen, request.category
    )
    return Response(b'{"results":[' + b",".join(r.render() for r in results) + b"]}",
                    media_type="application/json")


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarItems,
    summary="Items like one item",
    responses={**_AUTH_ERRORS,
               404: {"model": ErrorBody, "description": "The served model does not know the "
                     "item (or no model is served yet)"}},
)
def similar(
    runtime: RuntimeDep,
    item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                                 examples=["i9"])],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items", examples=[20])] = (
        DEFAULT_K
    ),
) -> SimilarItems:
    """The ``k`` items whose vectors in the served model point the most the same way
    as this item's (cosine, descending), the item itself and hidden items excluded
    (a hidden item may still be asked about)."""
    model = runtime.holder.current
    index = model.item_index.get(item_id) if model is not None else None
    if model is None or index is None:
        detail = ("no model is served yet" if model is None
                  else f"item {item_id!r} is not in model version {model.version}")
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
    top = similar_items(model, index, k, runtime.catalog.hidden_of(model))
    return SimilarItems(
        item_id=item_id,
        items=[RecommendedItem(item_id=model.item_ids[i], score=v)
               for i, v in zip(top.items.tolist(), top.scores.tolist(), strict=True)],
        model_version=model.version,
    )
