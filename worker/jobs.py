"""What happens to a retrain job when it does not simply succeed: tried again later
(with a doubling wait, a fixed number of times), handed to the next leader, queued
again for the next worker, or failed and queued afresh once its worker is found dead.
The worker loop (:mod:`worker.runner`) decides which; these write it to the store."""

from __future__ import annotations

import logging
import time

from smlrec.settings import Settings
from store import JobInfo, Store, StoreUnavailable

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 3600.0


def retry_delay(settings: Settings, attempts: int) -> float:
    """Wait before the next try of a retrain that failed ``attempts`` times."""
    return float(min(MAX_RETRY_DELAY_S,
                     settings.retrain_backoff_seconds * 2 ** max(attempts - 1, 0)))


def record_failure(
    store: Store, settings: Settings, job: JobInfo, error: BaseException | None
) -> None:
    """A try that failed: the job waits for its next try, or gives up (its period
    ``failed``) once ``settings.retrain_attempts`` tries have failed."""
    text = f"{type(error).__name__}: {error}"
    attempts = job.attempts + 1  # claiming counted this try
    log.error("job %s (period %d) failed on try %d of %d: %s", job.job_id, job.period_id,
              attempts, settings.retrain_attempts, text, exc_info=error)
    if attempts < settings.retrain_attempts:
        delay = retry_delay(settings, attempts)
        store.retry_later(job.job_id, text, time.time() + delay)
        log.warning("job %s: next try in %.0f s", job.job_id, delay)
    else:
        store.give_up(job.job_id, text)
        log.error("period %d: retrain gave up after %d tries; retry it with POST "
                  "/v1/admin/periods/%d/retrain", job.period_id, attempts, job.period_id)


def requeue(store: Store, job: JobInfo) -> None:
    """The worker is stopping without finishing ``job``: back to the queue as it was."""
    try:
        store.retry_later(job.job_id, "interrupted: the worker stopped", time.time())
        log.info("job %s (period %d) queued again for the next worker",
                 job.job_id, job.period_id)
    except StoreUnavailable:
        log.warning("could not queue job %s again; it is retried once stale", job.job_id)


def hand_over(store: Store, job: JobInfo) -> None:
    """Leadership was lost mid-job: fail the job and queue its period again for
    whoever leads next (if the database answers; else the job goes stale)."""
    try:
        store.finish_job(job.job_id, "failed", error="interrupted: the worker lost its lease")
        queued = store.create_job(job.period_id, job.kind)
        log.warning(
            "queued job %s for period %d for the next leader", queued.job_id, job.period_id
        )
    except StoreUnavailable:
        log.warning("could not hand job %s over; it is failed once stale", job.job_id)


def recover_stale(store: Store, stale_after_s: float, ours: str | None) -> None:
    """Fail a running job whose worker died (error "interrupted") and queue a fresh
    job for its period, so the period is trained once, not stuck. ``ours``: the job
    this worker is running (never stale)."""
    while True:
        job = store.running_or_queued_job()
        if job is None or job.status != "running" or job.job_id == ours:
            return
        last = job.heartbeat_at or job.started_at or job.created_at
        if time.time() - last <= stale_after_s:
            return  # its worker may still be finishing: wait
        if not store.fail_stale_jobs(stale_after_s):
            return
        if job.kind != "retrain":
            log.warning("%s job %s was interrupted", job.kind, job.job_id)
            continue
        queued = store.create_job(job.period_id, job.kind)
        log.warning("job %s (period %d) was interrupted; queued job %s",
                    job.job_id, job.period_id, queued.job_id)
