"""Admin endpoints (``Authorization: Bearer <SMLREC_ADMIN_TOKEN>``): retrain now,
retry a failed period, follow jobs, list, activate and pin model versions, list
periods."""

from __future__ import annotations

import logging
import re

from fastapi import HTTPException, status

from engine.holder import ModelLoadError
from service.activation import serve_everywhere
from service.deps import BusDep, HolderDep, RuntimeDep, StoreDep, admin_router
from service.schemas import (
    ErrorBody,
    JobOut,
    ModelList,
    ModelMetrics,
    ModelOut,
    PeriodList,
    PeriodOut,
    RetrainAccepted,
)
from store import Bus, BusUnavailable, Cut, JobInfo, QueueBusy, Store, VersionInfo

log = logging.getLogger(__name__)

MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
_JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # anything else is no job (404, no query)

router = admin_router()


def _job_out(job: JobInfo) -> JobOut:
    return JobOut(
        job_id=job.job_id,
        status=job.status,
        period_id=job.period_id,
        model_version=job.model_version,
        error=job.error,
        started_at=job.started_at,
        finished_at=job.finished_at,
        kind=job.kind,
        created_at=job.created_at,
    )


def _model_out(info: VersionInfo, active: bool | None = None) -> ModelOut:
    return ModelOut(
        version=info.version,
        period_id=info.period_id,
        strategy=info.strategy,
        created_at=info.created_at,
        active=info.active if active is None else active,
        train_seconds=info.train_seconds,
        metrics=ModelMetrics.model_validate(info.metrics) if info.metrics is not None else None,
        pinned=info.pinned,
        artifact_removed=info.removed_at is not None,
    )


@router.post(
    "/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RetrainAccepted,
    summary="Close the open period now and retrain",
    responses={409: {"model": ErrorBody,
                     "description": "A retrain is queued or running, or the open period is empty"}},
)
def retrain(runtime: RuntimeDep, store: StoreDep, bus: BusDep) -> RetrainAccepted:
    """Close the open period (it must hold at least one interaction) and queue its
    period-boundary retrain; the worker runs it. Follow it at /v1/admin/jobs/{job_id}.

    Every interaction acknowledged before this request lands in the period it
    closes. In distributed mode some may still wait in the stream: the request
    appends a cut there, and the worker closes the period when it reaches it
    (``period_id`` is the period open now; should a count rule close it first,
    the cut closes the next one too)."""
    with runtime.retrain_lock:
        if runtime.distributed:
            return _retrain_at_cut(store, bus)
        busy = store.running_or_queued_job()
        if busy is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail=f"retrain job {busy.job_id} (period {busy.period_id}) is {busy.status}",
            )
        closed = store.close_period_and_queue()  # one transaction: never a period without its job
        if closed is None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="the open period is empty")
        period, job = closed
    log.info("retrain job %s queued for period %d", job.job_id, period.period_id)
    return RetrainAccepted(job_id=job.job_id, period_id=period.period_id)


def _retrain_at_cut(store: Store, bus: Bus) -> RetrainAccepted:
    if store.count_open() == 0 and bus.backlog() == 0:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="the open period is empty")
    try:
        job = store.queue_for_open_period()
    except QueueBusy as busy:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(busy)) from None
    try:
        entry = bus.append_cut(Cut(job_id=job.job_id))
    except BusUnavailable:
        store.finish_job(job.job_id, "failed", error="the cut could not be appended: "
                         "the message bus is unavailable")
        raise
    log.info("retrain job %s queued for period %d at stream cut %s", job.job_id,
             job.period_id, entry)
    return RetrainAccepted(job_id=job.job_id, period_id=job.period_id)


@router.post(
    "/periods/{period_id}/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RetrainAccepted,
    summary="Retry the retrain of a period that failed",
    responses={404: {"model": ErrorBody, "description": "Unknown period"},
               409: {"model": ErrorBody,
                     "description": "The period is open or trained, or its retrain is queued "
                                    "or running"}},
)
def retry_period(period_id: int, store: StoreDep) -> RetrainAccepted:
    """Queue a new retrain of a closed period whose retrain gave up (status
    ``failed``). Retrains run in period order; a period whose later periods have
    trained meanwhile is learnt late, from the strategy's current state."""
    if not 0 <= period_id <= MAX_VERSION:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown period {period_id}")
    try:
        job = store.retry_period(period_id)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"unknown period {period_id}") from None
    except ValueError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from None
    log.info("retrain job %s queued again for period %d", job.job_id, period_id)
    return RetrainAccepted(job_id=job.job_id, period_id=period_id)


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="A retrain job",
    responses={404: {"model": ErrorBody, "description": "Unknown job"}},
)
def get_job(job_id: str, store: StoreDep) -> JobOut:
    job = store.get_job(job_id) if _JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown job {job_id!r}")
    return _job_out(job)


@router.get("/models", response_model=ModelList, summary="Model versions, newest first")
def list_models(store: StoreDep) -> ModelList:
    return ModelList(models=[_model_out(v) for v in store.list_versions()])


@router.post(
    "/models/{version}/activate",
    response_model=ModelOut,
    summary="Serve this version (e.g. roll back)",
    responses={
        404: {"model": ErrorBody, "description": "Unknown version"},
        409: {"model": ErrorBody, "description": "The version's artifact cannot be loaded"},
    },
)
def activate(
    version: int, store: StoreDep, bus: BusDep, holder: HolderDep
) -> ModelOut:
    """Load and verify the version here, make it the active one in the store,
    announce it to every replica (they also poll) and serve it now."""
    info = store.get_version(version) if 0 <= version <= MAX_VERSION else None
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown model version {version}")
    if info.removed_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"version {version}'s artifact "
                            "was removed by the retention (SMLREC_KEEP_VERSIONS)")
    try:
        serve_everywhere(version, store, bus, holder)
    except ModelLoadError as error:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"version {version} cannot be loaded: {error}"
        ) from error
    except KeyError as error:  # deleted meanwhile
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"unknown model version {version}"
        ) from error
    log.info("version %d activated", version)
    return _model_out(info, active=True)


@router.put(
    "/models/{version}/pin",
    response_model=ModelOut,
    summary="Keep this version whatever the retention says",
    responses={404: {"model": ErrorBody, "description": "Unknown version"}},
)
def pin(version: int, store: StoreDep) -> ModelOut:
    return _set_pin(store, version, True)


@router.delete(
    "/models/{version}/pin",
    response_model=ModelOut,
    summary="Let the retention delete this version again",
    responses={404: {"model": ErrorBody, "description": "Unknown version"}},
)
def unpin(version: int, store: StoreDep) -> ModelOut:
    return _set_pin(store, version, False)


def _set_pin(store: Store, version: int, pinned: bool) -> ModelOut:
    try:
        if not 0 <= version <= MAX_VERSION:
            raise KeyError(version)
        store.pin_version(version, pinned)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"unknown model version {version}") from None
    info = store.get_version(version)
    if info is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"unknown model version {version}")
    return _model_out(info)


@router.get("/periods", response_model=PeriodList, summary="Periods, oldest first",
            response_model_exclude_defaults=True)  # n_dropped only where rows were dropped
def list_periods(store: StoreDep) -> PeriodList:
    return PeriodList(
        periods=[
            PeriodOut(period_id=p.period_id, status=p.status, n_interactions=p.n_interactions,
                      start=p.start, end=p.end, n_dropped=p.n_dropped)
            for p in store.list_periods()
        ]
    )
