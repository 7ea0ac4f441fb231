"""The store: every SQL statement the service and the worker need, behind plain
synchronous methods. Each method is one short transaction and returns frozen
dataclasses (``store.dto``), never ORM objects.

Ordering guarantee: writers of the interaction log (``ingest``, ``close_period``)
are serialised (PostgreSQL advisory lock, SQLite write lock), so interaction ids
become visible in increasing order and a closed period's id range never gains rows.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, String, Table, func, select, text, true, update
from sqlalchemy.orm import Session

from store._base import LOCK_LOG
from store._queue import QueueBusy, QueueMixin
from store._records import RecordsMixin, job_info, queued_job
from store.db import make_engine, make_sessionmaker
from store.dto import (
    Caps,
    IngestResult,
    JobInfo,
    JobKind,
    NewInteraction,
    PeriodArrays,
    PeriodInfo,
)
from store.models import Interaction, Item, Job, Period, User

_FETCH_ROWS = 5_000  # interactions per fetch when reading periods into arrays

log = logging.getLogger(__name__)

MAX_EXTERNAL_ID = 128


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


class CapExceeded(ValueError):
    """A batch would give the open period more new users or items than its cap."""

    def __init__(self, what: str, cap: int, new_so_far: int, wanted: int) -> None:
        super().__init__(
            f"the open period may bring at most {cap:,} new {what}: it has {new_so_far:,}, "
            f"this batch would add {wanted:,}"
        )
        self.what = what
        self.cap = cap


class Store(QueueMixin, RecordsMixin):
    """Interactions, periods, jobs, model versions and state in one database."""

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Store:
        """A store with its own engine (``postgresql://`` URLs get psycopg 3)."""
        return cls(make_sessionmaker(make_engine(url, **engine_kwargs)))

    @property
    def in_memory(self) -> bool:
        """True for an in-memory SQLite database (visible to this process only)."""
        url = self._engine.url
        return url.get_backend_name() == "sqlite" and (
            url.database in (None, "", ":memory:") or "mode=memory" in str(url)
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        with self._tx() as session:
            session.execute(text("SELECT 1"))

    # ---- ingestion --------------------------------------------------------

    def ingest(
        self, rows: Sequence[NewInteraction], caps: Caps | None = None, drop_over_cap: bool = False
    ) -> IngestResult:
        """Store a batch of interactions in one transaction (all or nothing).

        Users and items get the next dense indices on first sight; a row whose
        ``event_id`` is already stored, or repeated earlier in the batch, is
        skipped and counted as a duplicate. Raises ValueError (before touching
        the database) for an empty or over-long external id or event id.

        ``caps`` bound the new users and items of the open period: a batch that
        would pass one raises :class:`CapExceeded` and stores nothing, or, with
        ``drop_over_cap``, leaves out the rows of the new users and items beyond
        the cap (counted in ``dropped`` and on the open period)."""
        with self._tx(write=True) as session:
            return self._ingest_in(session, rows, caps, drop_over_cap)

    def import_period(
        self, rows: Sequence[NewInteraction]
    ) -> tuple[PeriodInfo, JobInfo, IngestResult] | None:
        """Backfill: store ``rows`` as one closed period with its retrain queued,
        in one transaction (no live row can slip in). ValueError when the open
        period already holds interactions; None when every row was a duplicate."""
        with self._tx(write=True) as session:
            self._lock(session, LOCK_LOG)
            held = session.scalar(
                select(func.count(Interaction.id)).where(self._after_closed(session)))
            if held:
                raise ValueError(f"the open period already holds {held:,} interactions: "
                                 "import history before live traffic, or retrain first")
            result = self._ingest_in(session, rows, None, False)
            closed = self._close_in(session, None, None)
            if closed is None:
                return None
            return self._period_info(session, closed), self._job_for(session, closed.id), result

    def _ingest_in(
        self, session: Session, rows: Sequence[NewInteraction], caps: Caps | None,
        drop_over_cap: bool,
    ) -> IngestResult:
        batch_seen: set[str] = set()
        kept: list[NewInteraction] = []
        for row in rows:
            _check_row(row)
            if row.event_id is not None:
                if row.event_id in batch_seen:
                    continue
                batch_seen.add(row.event_id)
            kept.append(row)
        duplicates = len(rows) - len(kept)
        now = time.time()
        self._lock(session, LOCK_LOG)
        period_id = self._open_period_id(session, now)
        if batch_seen:
            stored = self._stored_event_ids(session, list(batch_seen))
            if stored:
                before = len(kept)
                kept = [r for r in kept if r.event_id is None or r.event_id not in stored]
                duplicates += before - len(kept)
        if not kept:
            return IngestResult(accepted=0, duplicates=duplicates, period_id=period_id)
        known_users = self._lookup(session, User, list(dict.fromkeys(r.user_id for r in kept)))
        known_items = self._lookup(session, Item, list(dict.fromkeys(r.item_id for r in kept)))
        dropped = 0
        if caps is not None and (caps.users is not None or caps.items is not None):
            before = len(kept)
            kept = self._within_caps(session, kept, caps, known_users, known_items,
                                     drop_over_cap)
            dropped = before - len(kept)
            if dropped:
                session.execute(update(Period).where(Period.id == period_id)
                                .values(n_dropped=Period.n_dropped + dropped))
                log.warning("dropped %d interactions over the caps on new users/items "
                            "of period %d", dropped, period_id)
            if not kept:
                return IngestResult(0, duplicates, period_id, dropped)
        users = self._dense_ids(session, User, [r.user_id for r in kept], known_users)
        items = self._dense_ids(session, Item, [r.item_id for r in kept], known_items)
        params = [
            {
                "user_idx": users[r.user_id],
                "item_idx": items[r.item_id],
                "ts": float(r.ts),
                "event_id": r.event_id,
                "received_at": now,
            }
            for r in kept
        ]
        inserted = self._insert_interactions(session, params)
        duplicates += len(kept) - inserted
        return IngestResult(inserted, duplicates, period_id, dropped)

    def _within_caps(
        self,
        session: Session,
        rows: list[NewInteraction],
        caps: Caps,
        known_users: dict[str, int],
        known_items: dict[str, int],
        drop: bool,
    ) -> list[NewInteraction]:
        """``rows`` if their new users and items fit the open period's caps; else
        CapExceeded, or (``drop``) the rows whose new user and new item are among
        the first that fit."""
        base_users, base_items = self._known_at_last_close(session)
        allowed: list[set[str] | None] = []
        for what, cap, known, model, base, ids in (
            ("users", caps.users, known_users, User, base_users, [r.user_id for r in rows]),
            ("items", caps.items, known_items, Item, base_items, [r.item_id for r in rows]),
        ):
            if cap is None:
                allowed.append(None)
                continue
            new = list(dict.fromkeys(i for i in ids if i not in known))
            so_far = self._scalar_int(
                session, select(func.coalesce(func.max(model.idx), -1))) + 1 - base
            room = max(cap - so_far, 0)
            if len(new) > room and not drop:
                raise CapExceeded(what, cap, so_far, len(new))
            allowed.append(set(new[:room]))
        users_ok, items_ok = allowed
        return [
            r for r in rows
            if (users_ok is None or r.user_id in known_users or r.user_id in users_ok)
            and (items_ok is None or r.item_id in known_items or r.item_id in items_ok)
        ]

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

    def _insert_interactions(self, session: Session, params: list[dict[str, Any]]) -> int:
        """Insert rows in order (ids follow the batch order); returns how many went in."""
        if self._dialect == "postgresql":
            # One statement with array parameters, sent in binary (psycopg's %b: text
            # arrays of 20,000 strings cost it a regular expression per element);
            # rowcount is what went in (ON CONFLICT skips the rest)
            result = session.connection().exec_driver_sql(
                "INSERT INTO interactions (user_idx, item_idx, ts, event_id, received_at) "
                "SELECT u, i, t, e, %(now)s FROM unnest(%(u)b::integer[], "
                "%(i)b::integer[], %(t)b::double precision[], %(e)b::varchar[]) "
                "WITH ORDINALITY AS x(u, i, t, e, n) ORDER BY n "
                "ON CONFLICT (event_id) DO NOTHING",
                {
                    "now": params[0]["received_at"],
                    "u": [p["user_idx"] for p in params],
                    "i": [p["item_idx"] for p in params],
                    "t": [p["ts"] for p in params],
                    "e": [p["event_id"] for p in params],
                },
            )
            return int(result.rowcount)
        # SQLite: the driver's executemany; its rowcount sums the rows that went in
        result = session.connection().exec_driver_sql(
            "INSERT INTO interactions (user_idx, item_idx, ts, event_id, received_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            [(p["user_idx"], p["item_idx"], p["ts"], p["event_id"], p["received_at"])
             for p in params],
        )
        return int(result.rowcount)

    def _stored_event_ids(self, session: Session, event_ids: list[str]) -> set[str]:
        stored: set[str] = set()
        if self._dialect == "sqlite":
            for rows in self._sqlite_in(session, "SELECT event_id FROM interactions "
                                        "WHERE event_id IN ({})", event_ids):
                stored.update(e for (e,) in rows)
            return stored
        for chunk in self._chunks(event_ids):
            found = session.scalars(
                select(Interaction.event_id).where(self._in(Interaction.event_id, chunk, String()))
            )
            stored.update(e for e in found if e is not None)
        return stored

    def _dense_ids(
        self,
        session: Session,
        model: type[User] | type[Item],
        external_ids: list[str],
        found: dict[str, int],
    ) -> dict[str, int]:
        """Map external ids to dense indices, allocating max(idx)+1, +2, ... to new
        ones in order of first appearance; ``found``: those already known (looked
        up in this transaction). Runs under the log lock."""
        wanted = list(dict.fromkeys(external_ids))
        found = dict(found)
        missing = [e for e in wanted if e not in found]
        if missing:
            start = self._scalar_int(session, select(func.coalesce(func.max(model.idx), -1))) + 1
            indices = list(range(start, start + len(missing)))
            if self._dialect == "postgresql":
                session.execute(
                    text(
                        f"INSERT INTO {model.__tablename__} (idx, external_id) "
                        "SELECT * FROM unnest(CAST(:idx AS integer[]), CAST(:ext AS varchar[])) "
                        "ON CONFLICT (external_id) DO NOTHING"
                    ),
                    {"idx": indices, "ext": missing},
                )
            else:
                session.connection().exec_driver_sql(
                    f"INSERT INTO {model.__tablename__} (idx, external_id) VALUES (?, ?) "
                    "ON CONFLICT (external_id) DO NOTHING",
                    list(zip(indices, missing, strict=True)),
                )
            found.update(self._lookup(session, model, missing))
        return found

    def _lookup(
        self, session: Session, model: type[User] | type[Item], external_ids: Sequence[str]
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        if self._dialect == "sqlite":
            for pairs in self._sqlite_in(session, f"SELECT external_id, idx FROM "
                                         f"{model.__tablename__} WHERE external_id IN ({{}})",
                                         external_ids):
                found.update(pairs)
            return found
        for chunk in self._chunks(external_ids):
            rows = session.execute(
                select(model.external_id, model.idx).where(
                    self._in(model.external_id, chunk, String())
                )
            )
            found.update({external: int(idx) for external, idx in rows})
        return found

    def _sqlite_in(self, session: Session, sql: str,
                   values: Sequence[str]) -> Iterator[Sequence[Any]]:
        """The rows of ``sql`` (its ``{}`` the placeholders of an IN list) for
        ``values``, one list per chunk, through the driver: building and compiling
        a statement of a thousand bound parameters cost more than running it (a
        1,000-row ingest took 30 ms with SQLAlchemy's statements, 15-19 without)."""
        for chunk in self._chunks(values):
            result = session.connection().exec_driver_sql(
                sql.format(", ".join("?" * len(chunk))), tuple(chunk))
            rows = result.cursor.fetchall()
            result.close()
            yield rows

    # ---- periods ----------------------------------------------------------

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

    @staticmethod
    def _last_closed_id(session: Session) -> int | None:
        last = session.scalar(select(func.max(Period.last_id)).where(Period.status != "open"))
        return int(last) if last is not None else None

    def _after_closed(self, session: Session) -> ColumnElement[bool]:
        last = self._last_closed_id(session)
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

    # ---- training data ----------------------------------------------------

    def period_arrays(self, period_id: int) -> PeriodArrays:
        """A period's interactions in id order (for the open period: those so far).
        Raises KeyError for an unknown period."""
        with self._tx() as session:
            period = session.get(Period, period_id)
            if period is None:
                raise KeyError(period_id)
            if period.status == "open":
                last = self._last_closed_id(session)
                low = last + 1 if last is not None else None
                high = session.scalar(select(func.max(Interaction.id)))
            else:
                low, high = period.first_id, period.last_id
            return self._arrays(session, low, None if high is None else int(high))

    def history_arrays(self, before_period_id: int) -> PeriodArrays:
        """Every interaction of the closed periods before ``before_period_id``."""
        with self._tx() as session:
            high = session.scalar(
                select(func.max(Period.last_id)).where(
                    Period.id < before_period_id, Period.status != "open"
                )
            )
            return self._arrays(session, None, None if high is None else int(high))

    @staticmethod
    def _arrays(session: Session, low: int | None, high: int | None) -> PeriodArrays:
        if high is None:
            empty_i, empty_f = np.empty(0, np.int64), np.empty(0, np.float64)
            return PeriodArrays(empty_i, empty_i.copy(), empty_f, 0, 0)
        query = select(Interaction.user_idx, Interaction.item_idx, Interaction.ts).where(
            Interaction.id <= high
        )
        if low is not None:
            query = query.where(Interaction.id >= low)
        # Straight from the driver's cursor, in slices: SQLAlchemy's row objects cost
        # ~15 us a row (1.4 s for a period of 100,000, most of it holding the GIL,
        # which an API process answering requests meanwhile feels), the cursor's
        # tuples ~1 us. Slices keep each GIL hold to a few milliseconds.
        result = session.connection().execute(query.order_by(Interaction.id))
        try:
            cursor = result.cursor
            parts = []
            while chunk := cursor.fetchmany(_FETCH_ROWS):
                parts.append(np.array(chunk, dtype=np.float64).reshape(-1, 3))
        finally:
            result.close()
        table = np.concatenate(parts) if parts else np.empty((0, 3))  # (n, 3)
        users = table[:, 0].astype(np.int64)  # exact: indices are far below 2^53
        items = table[:, 1].astype(np.int64)
        timestamps = table[:, 2].copy()
        max_user, max_item = session.execute(
            select(func.max(Interaction.user_idx), func.max(Interaction.item_idx)).where(
                Interaction.id <= high
            )
        ).one()
        n_users = int(max_user) + 1 if max_user is not None else 0
        n_items = int(max_item) + 1 if max_item is not None else 0
        return PeriodArrays(users, items, timestamps, n_users, n_items)

    # ---- users and items --------------------------------------------------

    def user_index(self, external_id: str) -> int | None:
        """The dense index of a user, or None if never seen."""
        with self._tx() as session:
            idx = session.scalar(select(User.idx).where(User.external_id == external_id))
            return int(idx) if idx is not None else None

    def user_indices(self, external_ids: Sequence[str]) -> dict[str, int]:
        """Dense indices of the known users among ``external_ids``."""
        with self._tx() as session:
            return self._lookup(session, User, list(dict.fromkeys(external_ids)))

    def item_index(self, external_id: str) -> int | None:
        """The dense index of an item, or None if never seen."""
        with self._tx() as session:
            idx = session.scalar(select(Item.idx).where(Item.external_id == external_id))
            return int(idx) if idx is not None else None

    def user_ids(self, start: int = 0) -> list[str]:
        """External user ids from dense index ``start`` on, position = index - start
        (indices are dense and append-only: a caller holding the first ``start``
        extends its list with this)."""
        with self._tx() as session:
            return list(session.scalars(
                select(User.external_id).where(User.idx >= start).order_by(User.idx)))

    def item_ids(self, start: int = 0) -> list[str]:
        """External item ids from dense index ``start`` on (as :meth:`user_ids`)."""
        with self._tx() as session:
            return list(session.scalars(
                select(Item.external_id).where(Item.idx >= start).order_by(Item.idx)))

    def seen_items(self, user_idx: int) -> np.ndarray:
        """Distinct item indices the user interacted with, in any period (sorted)."""
        with self._tx() as session:
            found = session.scalars(
                select(Interaction.item_idx)
                .where(Interaction.user_idx == user_idx)
                .distinct()
                .order_by(Interaction.item_idx)
            ).all()
            return np.asarray(found, dtype=np.int64)


def _check_row(row: NewInteraction) -> None:
    for name, value in (("user_id", row.user_id), ("item_id", row.item_id)):
        if not value or len(value) > MAX_EXTERNAL_ID:
            raise ValueError(f"{name} must be 1 to {MAX_EXTERNAL_ID} characters, got {value!r}")
    if row.event_id is not None and not 0 < len(row.event_id) <= MAX_EXTERNAL_ID:
        raise ValueError(f"event_id must be 1 to {MAX_EXTERNAL_ID} characters")
    if isinstance(row.ts, float) and not math.isfinite(row.ts):
        raise ValueError(f"ts must be a finite number of Unix seconds, got {row.ts!r}")
