"""Operations: liveness, readiness, Prometheus metrics (no credentials)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.deps import RuntimeDep
from service.runtime import Runtime
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
    response_model_exclude_unset=True,
    summary="Readiness",
    responses={503: {"model": ErrorBody, "description": "The database or Redis does not answer",
                     "content": {"application/json": {"example": {"detail": {
                         "missing": ["database"], "database": "unavailable",
                         "redis": "not configured"}}}}}},
)
def readyz(runtime: RuntimeDep) -> Readiness | JSONResponse:
    """200 when the database (and Redis, where configured) answer; else 503 with
    what is missing. Periods whose retrain gave up are named in ``retrain`` and
    ``failed_periods`` (still 200: serving works with the model it has)."""
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
    failed = _failed_periods(runtime)
    ready = Readiness(status="ready", database=checks["database"], redis=checks["redis"],
                      model_version=runtime.holder.version)
    if failed:  # named only when there is something to say
        ready.retrain, ready.failed_periods = _retrain_state(failed), failed
    return ready


def _failed_periods(runtime: Runtime) -> list[int]:
    try:
        return runtime.store.failed_periods()
    except StoreUnavailable:
        return []


def _retrain_state(failed: list[int]) -> str:
    """'ok', or the periods whose retrain gave up: serving goes on with the
    model it has, so the service stays ready; an operator retries them."""
    if not failed:
        return "ok"
    listed = ", ".join(str(p) for p in failed[:20]) + (" ..." if len(failed) > 20 else "")
    return (f"retrain failed for period(s) {listed}: retry with "
            "POST /v1/admin/periods/{period_id}/retrain")


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
    model = runtime.holder.current
    # what the worker records in the store, shared by every replica; when the
    # database does not answer, the last values stand
    with contextlib.suppress(StoreUnavailable):
        runtime.metrics.refresh_from_store(runtime.store,
                                           model.version if model is not None else None)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
