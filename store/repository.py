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
from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, func, select, text, update
from sqlalchemy.orm import Session

from store._base import LOCK_LOG
from store._deletion import DeletionMixin
from store._items import ItemsMixin
from store._periods import PeriodsMixin
from store._queue import QueueMixin
from store._reads import ReadsMixin
from store._records import RecordsMixin
from store._scores import ScoresMixin
from store.db import make_engine, make_sessionmaker
from store.dto import (
    Caps,
    IngestResult,
    JobInfo,
    NewInteraction,
    PeriodInfo,
)
from store.models import Interaction, Item, Period, User

log = logging.getLogger(__name__)

MAX_EXTERNAL_ID = 128
MAX_TYPE = 32  # characters of an interaction's type
MAX_WEIGHT = 100.0  # an interaction's weight is in (0, MAX_WEIGHT]


class CapExceeded(ValueError):
    """A batch would give the open period more new users or items than its cap."""

    def __init__(self, what: str, cap: int, new_so_far: int, wanted: int) -> None:
        super().__init__(
            f"the open period may bring at most {cap:,} new {what}: it has {new_so_far:,}, "
            f"this batch would add {wanted:,}"
        )
        self.what = what
        self.cap = cap


class Store(PeriodsMixin, ReadsMixin, QueueMixin, RecordsMixin, ScoresMixin, DeletionMixin,
            ItemsMixin):
    """Interactions, periods, jobs, model versions, strategy scores, item metadata and
    state in one database."""

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
        self, rows: Sequence[NewInteraction], caps: Caps | None = None, drop_over_cap: bool = False,
        entries: Sequence[str] | None = None,
    ) -> IngestResult:
        """Store a batch of interactions in one transaction (all or nothing).

        Users and items get the next dense indices on first sight; a row whose
        ``event_id`` is already stored, or repeated earlier in the batch, is
        skipped and counted as a duplicate. Raises ValueError (before touching
        the database) for an empty or over-long external id, event id or type,
        or a weight outside (0, 100].

        ``caps`` bound the new users and items of the open period: a batch that
        would pass one raises :class:`CapExceeded` and stores nothing, or, with
        ``drop_over_cap``, leaves out the rows of the new users and items beyond
        the cap (counted in ``dropped`` and on the open period).

        ``entries`` (the worker draining the stream): each row's stream entry; rows
        of a user deleted after their entry was appended are left out."""
        with self._tx(write=True) as session:
            if entries is not None:
                self._lock(session, LOCK_LOG)
                rows = self._not_deleted(session, rows, entries)
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
                "type": r.type,
                "weight": float(r.weight),
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

    def _insert_interactions(self, session: Session, params: list[dict[str, Any]]) -> int:
        """Insert rows in order (ids follow the batch order); returns how many went in."""
        if self._dialect == "postgresql":
            # One statement with array parameters, sent in binary (psycopg's %b: text
            # arrays of 20,000 strings cost it a regular expression per element);
            # rowcount is what went in (ON CONFLICT skips the rest)
            result = session.connection().exec_driver_sql(
                "INSERT INTO interactions "
                "(user_idx, item_idx, ts, event_id, received_at, type, weight) "
                "SELECT u, i, t, e, %(now)s, k, w FROM unnest(%(u)b::integer[], "
                "%(i)b::integer[], %(t)b::double precision[], %(e)b::varchar[], "
                "%(k)b::varchar[], %(w)b::double precision[]) "
                "WITH ORDINALITY AS x(u, i, t, e, k, w, n) ORDER BY n "
                "ON CONFLICT (event_id) DO NOTHING",
                {
                    "now": params[0]["received_at"],
                    "u": [p["user_idx"] for p in params],
                    "i": [p["item_idx"] for p in params],
                    "t": [p["ts"] for p in params],
                    "e": [p["event_id"] for p in params],
                    "k": [p["type"] for p in params],
                    "w": [p["weight"] for p in params],
                },
            )
            return int(result.rowcount)
        # SQLite: the driver's executemany; its rowcount sums the rows that went in
        result = session.connection().exec_driver_sql(
            "INSERT INTO interactions "
            "(user_idx, item_idx, ts, event_id, received_at, type, weight) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            [(p["user_idx"], p["item_idx"], p["ts"], p["event_id"], p["received_at"],
              p["type"], p["weight"]) for p in params],
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


def _check_row(row: NewInteraction) -> None:
    for name, value in (("user_id", row.user_id), ("item_id", row.item_id)):
        if not value or len(value) > MAX_EXTERNAL_ID:
            raise ValueError(f"{name} must be 1 to {MAX_EXTERNAL_ID} characters, got {value!r}")
    if row.event_id is not None and not 0 < len(row.event_id) <= MAX_EXTERNAL_ID:
        raise ValueError(f"event_id must be 1 to {MAX_EXTERNAL_ID} characters")
    if isinstance(row.ts, float) and not math.isfinite(row.ts):
        raise ValueError(f"ts must be a finite number of Unix seconds, got {row.ts!r}")
    if not 0 < len(row.type) <= MAX_TYPE:
        raise ValueError(f"type must be 1 to {MAX_TYPE} characters, got {row.type!r}")
    if not 0 < row.weight <= MAX_WEIGHT:  # NaN fails too
        raise ValueError(f"weight must be above 0 and at most {MAX_WEIGHT:g}, "
                         f"got {row.weight!r}")
