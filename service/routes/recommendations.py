"""Top-K recommendations for one user and for a batch of users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from service.deps import HolderDep, RecommenderDep, require_client_key
from service.schemas import (
    DEFAULT_K,
    MAX_ID_LENGTH,
    MAX_K,
    BatchRecommendationRequest,
    BatchRecommendations,
    ErrorBody,
    Recommendations,
)

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
def user_recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, examples=["u42"])],
    holder: HolderDep,
    recommender: RecommenderDep,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items", examples=[20])] = (
        DEFAULT_K
    ),
    exclude_seen: Annotated[
        bool, Query(description="Drop items the user has interacted with")
    ] = True,
) -> JSONResponse:
    """Items by score, descending, at most ``k``. A user the model does not know
    (or any user before the first model) gets the most popular items, with
    ``"fallback": "popularity"``."""
    [result] = recommender.recommend(holder.current, [user_id], k, exclude_seen)
    return JSONResponse(result.to_json())


@router.post(
    "/recommendations",
    response_model=BatchRecommendations,
    summary="Recommendations for up to 1000 users",
    responses=_AUTH_ERRORS,
)
def batch_recommendations(
    request: BatchRecommendationRequest, holder: HolderDep, recommender: RecommenderDep
) -> JSONResponse:
    """One result per user id, in the order given, all from the same model version."""
    results = recommender.recommend(
        holder.current, request.user_ids, request.k, request.exclude_seen
    )
    return JSONResponse({"results": [r.to_json() for r in results]})
