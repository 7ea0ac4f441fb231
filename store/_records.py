"""Jobs, model versions and named state: the store's bookkeeping tables."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Table, func, select, update

from store._base import LOCK_VERSIONS, StoreBase
from store.dto import FinalJobStatus, JobInfo, JobKind, VersionInfo
from store.models import Job, ModelVersion, State

ACTIVE_VERSION_KEY = "active_version"
STRATEGY_STATE_KEY = "strategy_state"

_JOB_KINDS = ("retrain", "bootstrap")
_FINAL_STATUSES = ("succeeded", "failed")


def job_info(job: Job) -> JobInfo:
    return JobInfo(
        job_id=job.id,
        kind=job.kind,  # type: ignore[arg-type]
        period_id=job.period_id,
        status=job.status,  # type: ignore[arg-type]
        model_version=job.model_version,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        heartbeat_at=job.heartbeat_at,
        not_before=job.not_before,
    )


def queued_job(period_id: int, kind: JobKind) -> Job:
    """A new queued job row for ``period_id`` (not added to any session yet)."""
    if kind not in _JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return Job(
        id=uuid.uuid4().hex,
        kind=kind,
        period_id=period_id,
        status="queued",
        model_version=None,
        error=None,
        created_at=time.time(),
        started_at=None,
        finished_at=None,
        attempts=0,
        heartbeat_at=None,
        not_before=None,
    )


def _version_info(row: ModelVersion, active: int | None) -> VersionInfo:
    return VersionInfo(
        version=row.version,
        period_id=row.period_id,
        strategy=row.strategy,
        created_at=row.created_at,
        path=row.path,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        train_seconds=row.train_seconds,
        n_users=row.n_users,
        n_items=row.n_items,
        metrics=dict(row.metrics) if row.metrics is not None else None,
        active=row.version == active,
        pinned=bool(row.pinned),
        removed_at=row.removed_at,
    )


class RecordsMixin(StoreBase):
    """Jobs, versions and state; mixed into :class:`store.Store`."""

    # ---- jobs -------------------------------------------------------------

    def create_job(self, period_id: int, kind: JobKind = "retrain") -> JobInfo:
        """A new queued job for ``period_id``."""
        job = queued_job(period_id, kind)
        with self._tx() as session:
            session.add(job)
        return job_info(job)

    def claim_job(self, job_id: str) -> bool:
        """Move a queued job to running; False if it was not queued (someone else
        claimed it, or it is finished or unknown)."""
        now = time.time()
        with self._tx() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running", started_at=now, heartbeat_at=now, attempts=Job.attempts + 1
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def heartbeat(self, job_id: str) -> None:
        """Record that the running job is still alive."""
        with self._tx() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(heartbeat_at=time.time())
            )

    def finish_job(
        self,
        job_id: str,
        status: FinalJobStatus,
        model_version: int | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a job succeeded or failed. Raises KeyError for an unknown job."""
        if status not in _FINAL_STATUSES:
            raise ValueError(f"a job finishes as 'succeeded' or 'failed', not {status!r}")
        with self._tx() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status=status, model_version=model_version, error=error, finished_at=time.time()
                )
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise KeyError(job_id)

    def get_job(self, job_id: str) -> JobInfo | None:
        with self._tx() as session:
            job = session.get(Job, job_id)
            return job_info(job) if job is not None else None

    def running_or_queued_job(self) -> JobInfo | None:
        """A job that is running (preferred) or queued, oldest first; None if idle."""
        with self._tx() as session:
            for status in ("running", "queued"):
                job = session.scalars(
                    select(Job).where(Job.status == status).order_by(Job.created_at).limit(1)
                ).first()
                if job is not None:
                    return job_info(job)
        return None

    def next_queued_job(self) -> JobInfo | None:
        """The oldest queued job, if any."""
        with self._tx() as session:
            job = session.scalars(
                select(Job).where(Job.status == "queued").order_by(Job.created_at).limit(1)
            ).first()
            return job_info(job) if job is not None else None

    def fail_stale_jobs(self, older_than_s: float) -> int:
        """Fail running jobs whose last heartbeat (or start) is older than
        ``older_than_s`` seconds, with error ``"interrupted"``. Returns how many."""
        now = time.time()
        with self._tx() as session:
            result = session.execute(
                update(Job)
                .where(
                    Job.status == "running",
                    func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)
                    < now - older_than_s,
                )
                .values(status="failed", error="interrupted", finished_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- model versions ---------------------------------------------------

    def record_version(
        self,
        period_id: int,
        strategy: str,
        path: str,
        sha256: str,
        size_bytes: int,
        train_seconds: float,
        n_users: int,
        n_items: int,
    ) -> int:
        """Record a trained model whose artifact is already written; returns its
        version number (1, 2, 3, ...). It does not become active by itself."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_VERSIONS)
            latest = select(func.coalesce(func.max(ModelVersion.version), 0))
            version = self._scalar_int(session, latest) + 1
            session.add(
                ModelVersion(
                    version=version,
                    period_id=period_id,
                    strategy=strategy,
                    created_at=time.time(),
                    path=path,
                    sha256=sha256,
                    size_bytes=size_bytes,
                    train_seconds=train_seconds,
                    n_users=n_users,
                    n_items=n_items,
                    metrics=None,
                )
            )
        return version

    def list_versions(self) -> list[VersionInfo]:
        """All versions, newest first, with ``active`` set on the active one."""
        with self._tx() as session:
            active = self._state_value(session, ACTIVE_VERSION_KEY)
            rows = session.scalars(select(ModelVersion).order_by(ModelVersion.version.desc()))
            return [_version_info(row, active) for row in rows]

    def get_version(self, version: int) -> VersionInfo | None:
        with self._tx() as session:
            row = session.get(ModelVersion, version)
            if row is None:
                return None
            return _version_info(row, self._state_value(session, ACTIVE_VERSION_KEY))

    def set_metrics(self, version: int, metrics: dict[str, Any]) -> None:
        """Attach evaluation metrics to a version. Raises KeyError if unknown."""
        with self._tx() as session:
            result = session.execute(
                update(ModelVersion)
                .where(ModelVersion.version == version)
                .values(metrics=dict(metrics))
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise KeyError(version)

    def pin_version(self, version: int, pinned: bool = True) -> None:
        """Keep (or stop keeping) a version whatever the retention says. KeyError
        if unknown."""
        with self._tx() as session:
            result = session.execute(
                update(ModelVersion).where(ModelVersion.version == version).values(pinned=pinned))
            if not result.rowcount:  # type: ignore[attr-defined]
                raise KeyError(version)

    def mark_removed(self, version: int) -> None:
        """Record that retention deleted the version's artifact (the row stays)."""
        with self._tx() as session:
            session.execute(update(ModelVersion).where(ModelVersion.version == version)
                            .values(removed_at=time.time()))

    def newest_version(
        self, *, evaluated: bool = False, strategy: str | None = None
    ) -> VersionInfo | None:
        """The highest version (with ``evaluated``: the highest with metrics; with
        ``strategy``: of that strategy), or None."""
        with self._tx() as session:
            query = select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1)
            if evaluated:
                query = query.where(ModelVersion.metrics.is_not(None))
            if strategy is not None:
                query = query.where(ModelVersion.strategy == strategy)
            row = session.scalars(query).first()
            if row is None:
                return None
            return _version_info(row, self._state_value(session, ACTIVE_VERSION_KEY))

    def latest_version(self) -> int | None:
        """The highest version number, or None before the first model."""
        with self._tx() as session:
            latest = session.scalar(select(func.max(ModelVersion.version)))
            return int(latest) if latest is not None else None

    def active_version(self) -> int | None:
        """The version replicas should serve, or None if none was activated."""
        with self._tx() as session:
            value = self._state_value(session, ACTIVE_VERSION_KEY)
            return int(value) if value is not None else None

    def set_active_version(self, version: int) -> None:
        """Point replicas at ``version``. Raises KeyError if it was never recorded."""
        with self._tx(write=True) as session:  # reads, then writes: begin as a writer
            if session.get(ModelVersion, version) is None:
                raise KeyError(version)
            self._put_state(session, ACTIVE_VERSION_KEY, int(version))

    # ---- named state ------------------------------------------------------

    def get_state(self, key: str) -> Any | None:
        with self._tx() as session:
            return self._state_value(session, key)

    def put_state(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` (insert or replace)."""
        with self._tx() as session:
            self._put_state(session, key, value)

    @staticmethod
    def _state_value(session: Any, key: str) -> Any | None:
        return session.scalar(select(State.value).where(State.key == key))

    def _put_state(self, session: Any, key: str, value: Any) -> None:
        table: Table = State.__table__  # type: ignore[assignment]
        stmt = self._insert(table).values(key=key, value=value)
        session.execute(
            stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded.value})
        )
