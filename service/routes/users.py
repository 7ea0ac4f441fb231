"""Deleting a user's data (admin): ``DELETE /v1/admin/users/{user_id}``."""

from __future__ import annotations

import logging

from fastapi import HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field

from service.deps import RuntimeDep, admin_router
from service.runtime import Runtime
from service.schemas import ID_PATTERN, MAX_ID_LENGTH, ErrorBody
from store import BusUnavailable

log = logging.getLogger(__name__)

router = admin_router()


class UserDeleted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"user_id": "u42", "deleted_interactions": 57}]})

    user_id: str
    deleted_interactions: int = Field(description="Stored interactions removed")


def _stream_mark(runtime: Runtime) -> str | None:
    """The newest stream entry (distributed mode): rows of the user up to it that
    are not stored yet are dropped when the worker drains them."""
    if not runtime.distributed:
        return None
    try:
        return runtime.bus.stream_mark()
    except BusUnavailable as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail=f"Redis is unavailable: {error}",
                            headers={"Retry-After": "5"}) from error


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UserDeleted,
    summary="Delete a user's data",
    responses={
        404: {"model": ErrorBody, "description": "Unknown user"},
        503: {"model": ErrorBody, "description": "Redis is unavailable (distributed mode)"},
    },
)
def delete_user(
    runtime: RuntimeDep,
    user_id: str = Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN),
) -> UserDeleted:
    """The user's interactions leave the store (rows still on their way through the
    Redis stream are dropped when drained), every replica serves the user as unknown
    at once, no retraining reads them again, and every model written from now on
    leaves the user out (their row is zeroed, their id gone). The id may be used
    again: it is then a new user."""
    mark = _stream_mark(runtime)
    deleted = runtime.store.delete_user(user_id, mark)
    if deleted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown user {user_id!r}")
    idx, count = deleted
    runtime.forgotten.forget(idx, user_id, runtime.holder.current)
    try:
        runtime.bus.publish_forget(idx, user_id)
    except BusUnavailable as error:
        log.warning("user deletion not announced (replicas find it by polling): %s", error)
    log.info("deleted a user's data: %d interactions (user index %d)", count, idx)
    return UserDeleted(user_id=user_id, deleted_interactions=count)
