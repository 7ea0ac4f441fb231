"""The retrain queue: jobs run in period order, a failed one waits (backoff)
before its next try, and one that gives up leaves its period ``failed`` until
an operator asks again. Mixed into :class:`store.Store`."""

from __future__ import annotations

import time

from sqlalchemy import func, select, update

from store._base import LOCK_LOG, StoreBase
from store._records import job_info, queued_job
from store.dto import JobInfo
from store.models import Job, Period


class QueueBusy(Exception):
    """A retrain is already queued or running."""

    def __init__(self, job: JobInfo) -> None:
        super().__init__(f"retrain job {job.job_id} (period {job.period_id}) is {job.status}")
        self.job = job


class QueueMixin(StoreBase):
    def next_job(self, now: float | None = None) -> JobInfo | None:
        """The retrain job to run next: the queued job of the lowest closed
        period, once its ``not_before`` has passed (a later period never
        overtakes it). None while some job is running or the head of the queue
        waits."""
        now = time.time() if now is None else now
        with self._tx() as session:
            if session.scalar(select(Job.id).where(Job.status == "running").limit(1)):
                return None
            head = session.scalars(
                select(Job)
                .join(Period, Period.id == Job.period_id)
                .where(Job.status == "queued", Job.kind == "retrain", Period.status != "open")
                .order_by(Job.period_id, Job.created_at)
                .limit(1)
            ).first()
            if head is None or (head.not_before is not None and head.not_before > now):
                return None
            return job_info(head)

    def retry_later(self, job_id: str, error: str, not_before: float) -> None:
        """A try of a running job failed: queue it again, to start no earlier than
        ``not_before`` (its attempts so far stay counted)."""
        with self._tx() as session:
            session.execute(
                update(Job).where(Job.id == job_id)
                .values(status="queued", error=error, not_before=not_before, heartbeat_at=None)
            )

    def give_up(self, job_id: str, error: str) -> None:
        """The last try failed: the job fails and its period is ``failed`` (until
        :meth:`retry_period`)."""
        now = time.time()
        with self._tx() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            job.status, job.error, job.finished_at = "failed", error, now
            session.execute(
                update(Period).where(Period.id == job.period_id, Period.status == "closed")
                .values(status="failed")
            )

    def retry_period(self, period_id: int) -> JobInfo:
        """Queue a new retrain of a closed period whose retrain failed (or that has
        none). KeyError: unknown period; ValueError: open, trained, or a job of
        it is queued or running."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            period = session.get(Period, period_id)
            if period is None:
                raise KeyError(period_id)
            if period.status in ("open", "trained"):
                raise ValueError(f"period {period_id} is {period.status}")
            busy = session.scalars(
                select(Job).where(Job.period_id == period_id, Job.kind == "retrain",
                                  Job.status.in_(("queued", "running")))
            ).first()
            if busy is not None:
                raise ValueError(f"period {period_id} has retrain job {busy.id} {busy.status}")
            period.status = "closed"
            job = queued_job(period_id, "retrain")
            session.add(job)
            session.flush()
            return job_info(job)

    def failed_periods(self) -> list[int]:
        """Periods whose retrain gave up, oldest first."""
        with self._tx() as session:
            return [int(p) for p in session.scalars(
                select(Period.id).where(Period.status == "failed").order_by(Period.id))]

    def dropped_total(self) -> int:
        """Interactions refused by the caps on new users and items, all periods."""
        with self._tx() as session:
            return self._scalar_int(session, select(func.coalesce(func.sum(Period.n_dropped), 0)))
