"""The periods: the open one, closing it (alone, with its job, or at a cut from the
stream), and what each period holds. Mixed into :class:`store.Store`."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import ColumnElement, Table, func, select, true, update
from sqlalchemy.orm import Session

from store._base import LOCK_LOG, StoreBase
from store._queue import QueueBusy
from store._records import job_info, queued_job
from store.dto import JobInfo, JobKind, PeriodInfo
from store.models import Interaction, Job, Period

log = logging.getLogger(__name__)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def last_closed_id(session: Session) -> int | None:
    """The last interaction id of the closed periods (None before the first closes)."""
    last = session.scalar(select(func.max(Period.last_id)).where(Period.status != "open"))
    return int(last) if last is not None else None


class PeriodsMixin(StoreBase):
    def open_period(self) -> PeriodInfo:
        """The open period (period 0 is created on first use)."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            period_id = self._open_period_id(session, time.time())
            period = session.get_one(Period, period_id)
            return self._period_info(session, period)

    def count_open(self) -> int:
        """Interactions logged since the last closed period."""
        with self._tx() as session:
            count = session.scalar(
                select(func.count(Interaction.id)).where(self._after_closed(session))
            )
            return int(count or 0)

    def first_open_ts(self) -> float | None:
        """Earliest event time among interactions not yet in a closed period."""
        with self._tx() as session:
            earliest = select(func.min(Interaction.ts)).where(self._after_closed(session))
            first = session.scalar(earliest)
            return float(first) if first is not None else None

    def close_period(
        self, max_rows: int | None = None, until_ts: float | None = None
    ) -> PeriodInfo | None:
        """Close the open period and open the next one.

        The period takes, in id order, the interactions after the last closed
        period: at most ``max_rows`` of them, and with ``until_ts`` only up to the
        last one whose event time is before ``until_ts``. Periods are id ranges,
        so a row received before that one but stamped at or after ``until_ts``
        (a client clock ahead) stays in the period; ``end`` then shows it.
        Returns None, changing nothing, when the period would be empty."""
        with self._tx(write=True) as session:
            closed = self._close_in(session, max_rows, until_ts)
            return self._period_info(session, closed) if closed is not None else None

    def close_period_and_queue(
        self, max_rows: int | None = None, until_ts: float | None = None,
        kind: JobKind = "retrain",
    ) -> tuple[PeriodInfo, JobInfo] | None:
        """:meth:`close_period` and its ``kind`` job, in one transaction: a
        process dying in between cannot leave a closed period that no job will
        ever train. The job is the one already queued for that period (an admin
        request waiting for its cut) or a new one. None, changing nothing, when
        the period would be empty."""
        with self._tx(write=True) as session:
            closed = self._close_in(session, max_rows, until_ts)
            if closed is None:
                return None
            return self._period_info(session, closed), self._job_for(session, closed.id, kind)

    def close_at_cut(
        self, cut_key: str, job_id: str | None = None, period_id: int | None = None
    ) -> tuple[PeriodInfo, JobInfo] | None:
        """Close the open period at a cut read from the interaction stream (every
        row before it is stored), once per ``cut_key``: a cut delivered again
        changes nothing. ``period_id``: close only that period (a cut of the
        time rule). ``job_id``: the job an admin request queued for the period
        that was open then; it trains the period this cut closes if that is
        still its period, and fails when that period turns out empty. None when
        nothing was closed."""
        now = time.time()
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            if session.scalar(select(Period.id).where(Period.cut_key == cut_key)) is not None:
                return None  # this cut was made before (delivered again)
            open_id = self._open_period_id(session, now)
            if period_id is not None and period_id != open_id:
                return None  # that period is closed already
            closed = self._close_in(session, None, None, cut_key)
            if closed is None:
                if period_id is not None:
                    self._touch_open(session, now)  # an empty window: the next one starts now
                if job_id is not None:
                    session.execute(
                        update(Job).where(Job.id == job_id, Job.status == "queued",
                                          Job.period_id == open_id)
                        .values(status="failed", finished_at=now,
                                error="nothing to train: the period was empty at the cut"))
                return None
            return self._period_info(session, closed), self._job_for(session, closed.id)

    def queue_for_open_period(self) -> JobInfo:
        """A retrain job for the open period, to run once a cut closes it (an admin
        request in distributed mode, where the rows before the request may still
        wait in the stream). Raises :class:`QueueBusy` when a retrain is queued or
        running."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            busy = session.scalars(
                select(Job).where(Job.kind == "retrain", Job.status.in_(("queued", "running")))
                .order_by(Job.created_at).limit(1)
            ).first()
            if busy is not None:
                raise QueueBusy(job_info(busy))
            job = queued_job(self._open_period_id(session, time.time()), "retrain")
            session.add(job)
            session.flush()
            return job_info(job)

    def touch_open_period(self) -> None:
        """Restart the open period's clock (``opened_at`` = now): the time rule
        found it empty at the end of its window."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            self._touch_open(session, time.time())

    def _touch_open(self, session: Session, now: float) -> None:
        session.execute(update(Period).where(Period.status == "open").values(opened_at=now))

    def _job_for(self, session: Session, period_id: int, kind: JobKind = "retrain") -> JobInfo:
        """The queued ``kind`` job of ``period_id``, made if there is none."""
        job = session.scalars(
            select(Job).where(Job.period_id == period_id, Job.kind == kind,
                              Job.status == "queued").order_by(Job.created_at).limit(1)
        ).first()
        if job is None:
            job = queued_job(period_id, kind)
            session.add(job)
            session.flush()
        return job_info(job)

    def _close_in(
        self, session: Session, max_rows: int | None, until_ts: float | None,
        cut_key: str | None = None,
    ) -> Period | None:
        """The closing itself, in the caller's writing transaction: the closed
        period's row, or None when it would be empty."""
        if max_rows is not None and max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        now = time.time()
        self._lock(session, LOCK_LOG)
        after = self._after_closed(session)
        window = select(Interaction.id, Interaction.ts).where(after).order_by(Interaction.id)
        if max_rows is not None:
            window = window.limit(max_rows)
        w = window.subquery()
        cut = select(func.max(w.c.id))
        if until_ts is not None:
            cut = cut.where(w.c.ts < until_ts)
        last_id = session.scalar(cut)
        if last_id is None:
            return None
        count, first_id, start, end, max_user, max_item = session.execute(
            select(
                func.count(Interaction.id),
                func.min(Interaction.id),
                func.min(Interaction.ts),
                func.max(Interaction.ts),
                func.max(Interaction.user_idx),
                func.max(Interaction.item_idx),
            ).where(after, Interaction.id <= last_id)
        ).one()
        known_users, known_items = self._known_at_last_close(session)
        period_id = self._open_period_id(session, now)
        session.execute(
            update(Period)
            .where(Period.id == period_id)
            .values(
                status="closed",
                first_id=int(first_id),
                last_id=int(last_id),
                n_interactions=int(count),
                start=float(start),
                end=float(end),
                closed_at=now,
                cut_key=cut_key,
                n_users=max(known_users, int(max_user) + 1),
                n_items=max(known_items, int(max_item) + 1),
            )
        )
        self._new_period(session, period_id + 1, now)
        closed = session.get_one(Period, period_id)
        session.refresh(closed)
        log.info("closed period %d: %d interactions", period_id, count)
        return closed

    def mark_trained(self, period_id: int) -> None:
        """Mark a closed (or failed) period as trained. KeyError if unknown,
        ValueError if open."""
        with self._tx(write=True) as session:  # reads, then writes: begin as a writer
            period = session.get(Period, period_id)
            if period is None:
                raise KeyError(period_id)
            if period.status == "open":
                raise ValueError(f"period {period_id} is still open")
            period.status = "trained"

    def list_periods(self) -> list[PeriodInfo]:
        """Every period, oldest first (the open one last, with its counts so far)."""
        with self._tx() as session:
            periods = session.scalars(select(Period).order_by(Period.id)).all()
            return [self._period_info(session, p) for p in periods]

    def get_period(self, period_id: int) -> PeriodInfo | None:
        with self._tx() as session:
            period = session.get(Period, period_id)
            return self._period_info(session, period) if period is not None else None

    def _period_info(self, session: Session, period: Period) -> PeriodInfo:
        n, start, end = period.n_interactions, period.start, period.end
        if period.status == "open":
            so_far = select(
                func.count(Interaction.id), func.min(Interaction.ts), func.max(Interaction.ts)
            ).where(self._after_closed(session))
            count, start, end = session.execute(so_far).one()
            n = int(count)
        return PeriodInfo(
            period_id=period.id,
            status=period.status,  # type: ignore[arg-type]
            n_interactions=n,
            start=start,
            end=end,
            first_id=period.first_id,
            last_id=period.last_id,
            opened_at=period.opened_at,
            closed_at=period.closed_at,
            n_dropped=int(period.n_dropped or 0),
        )

    def _after_closed(self, session: Session) -> ColumnElement[bool]:
        last = last_closed_id(session)
        return Interaction.id > last if last is not None else true()

    def _open_period_id(self, session: Session, now: float) -> int:
        period_id = session.scalar(select(Period.id).where(Period.status == "open"))
        if period_id is not None:
            return int(period_id)
        next_id = self._scalar_int(session, select(func.coalesce(func.max(Period.id) + 1, 0)))
        self._new_period(session, next_id, now)
        return next_id

    def _new_period(self, session: Session, period_id: int, now: float) -> None:
        session.execute(
            self._insert(_table(Period))
            .values(id=period_id, status="open", n_interactions=0, opened_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
        )

    def _known_at_last_close(self, session: Session) -> tuple[int, int]:
        """Users and items known when the last closed period closed (0, 0 before)."""
        last = session.execute(
            select(Period.n_users, Period.n_items, Period.last_id)
            .where(Period.status != "open").order_by(Period.id.desc()).limit(1)
        ).first()
        if last is None:
            return 0, 0
        if last.n_users is not None and last.n_items is not None:
            return int(last.n_users), int(last.n_items)
        return self._known_through(session, int(last.last_id))  # closed before the count

    @staticmethod
    def _known_through(session: Session, last_id: int) -> tuple[int, int]:
        users, items = session.execute(
            select(func.max(Interaction.user_idx), func.max(Interaction.item_idx))
            .where(Interaction.id <= last_id)
        ).one()
        return (int(users) + 1 if users is not None else 0,
                int(items) + 1 if items is not None else 0)
