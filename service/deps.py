"""Typed dependencies of the routes, and the two credentials the API knows.

Admin endpoints take ``Authorization: Bearer <SMLREC_ADMIN_TOKEN>`` (missing or
malformed: 401, wrong: 403). When ``SMLREC_API_KEY`` is set, the client endpoints
take ``X-API-Key`` (missing: 401, wrong: 403). Both compare in constant time.
"""

from __future__ import annotations

import hmac
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from engine.holder import ModelHolder
from engine.metrics import ServiceMetrics
from engine.recent import RecentInteractions
from engine.recommender import Recommender
from service.ingest import Ingestor
from service.runtime import Runtime
from service.schemas import ErrorBody
from smlrec.settings import Settings
from store import Bus, Store

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="SMLREC_ADMIN_TOKEN (admin endpoints only)",
)
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ClientKey",
    description="Required on the client endpoints only when SMLREC_API_KEY is set",
)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_store(runtime: RuntimeDep) -> Store:
    return runtime.store


async def get_bus(runtime: RuntimeDep) -> Bus:
    return runtime.bus


async def get_holder(runtime: RuntimeDep) -> ModelHolder:
    return runtime.holder


async def get_recommender(runtime: RuntimeDep) -> Recommender:
    return runtime.recommender


async def get_ingestor(runtime: RuntimeDep) -> Ingestor:
    return runtime.ingestor


async def get_metrics(runtime: RuntimeDep) -> ServiceMetrics:
    return runtime.metrics


async def get_recent(runtime: RuntimeDep) -> RecentInteractions:
    return runtime.recent


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
BusDep = Annotated[Bus, Depends(get_bus)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RecentDep = Annotated[RecentInteractions, Depends(get_recent)]


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes, so any header text works)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def require_admin(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="admin token required: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not same_secret(credentials.credentials, runtime.admin_token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="wrong admin token")


async def require_client_key(
    request: Request, key: Annotated[str | None, Depends(_api_key)]
) -> None:
    runtime: Runtime = request.app.state.runtime  # on every client request: kept lean
    expected = runtime.settings.api_key
    if expected is None:
        return
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="X-API-Key header required")
    if not same_secret(key, expected):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="wrong API key")


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Authorization header missing or malformed"},
    403: {"model": ErrorBody, "description": "Wrong admin token"},
}


def admin_router(prefix: str = "/v1/admin", tags: list[str | Enum] | None = None,
                 **options: Any) -> APIRouter:
    """A router every route of which takes the admin token (its 401 and 403 documented)."""
    return APIRouter(prefix=prefix, tags=tags or ["admin"], dependencies=[Depends(require_admin)],
                     responses=dict(ADMIN_ERRORS), **options)
