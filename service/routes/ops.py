"""Operations: liveness, readiness, Prometheus metrics (no credentials)."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import RuntimeDep
from service.schemas import ErrorBody, Health, Readiness
from store import BusUnavailable, StoreUnavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 while the process runs."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": ErrorBody, "description": "The database or Redis does not answer",
                     "content": {"application/json": {"example": {"detail": {
                         "missing": ["database"], "database": "unavailable",
                         "redis": "not configured"}}}}}},
)
def readyz(runtime: RuntimeDep) -> Readiness | JSONResponse:
    """200 when the database (and Redis, where configured) answer; else 503 with
    what is missing."""
    checks: dict[str, str] = {}
    try:
        runtime.store.ping()
        checks["database"] = "ok"
    except StoreUnavailable:
        checks["database"] = "unavailable"
    if runtime.distributed:
        try:
            runtime.bus.ping()
            checks["redis"] = "ok"
        except BusUnavailable:
            checks["redis"] = "unavailable"
    else:
        checks["redis"] = "not configured"
    missing = [name for name, state in checks.items() if state == "unavailable"]
    if missing:
        return JSONResponse(
            {"detail": {"missing": missing, **checks}},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return Readiness(
        database=checks["database"], redis=checks["redis"], model_version=runtime.holder.version
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"example": "smlrec_model_swaps_total 3.0\n"}},
            "description": "Prometheus text format",
        }
    },
)
def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
