"""Making a batch of interactions durable.

Embedded mode: one database transaction (``Store.ingest``), all or nothing.

Distributed mode: one Redis stream entry per request (the worker moves it into
the database). Repeats of an event id within the request are dropped here; then
one Redis script (:meth:`store.RedisBus.append_unseen`) looks the remaining ids
up, appends the rows whose ids are not marked as one entry, and only then marks
those ids, atomically. So a failed request leaves nothing behind (marking first
would lose data: the client's retry would find its own ids marked and be told
they were duplicates), and of two requests carrying the same event id exactly
one counts it as accepted. The database stays the authority on duplicates: an id
whose mark has expired, or could not be written, is dropped there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from store import BusUnavailable, Caps, NewInteraction, RedisBus, Store, StoreUnavailable

log = logging.getLogger(__name__)

PERIOD_TTL_S = 1.0  # how long a looked-up open period id is reused
PERIOD_RETRY_S = 5.0  # after a database error, how long to answer from the last known id

@dataclass(frozen=True)
class Ingested:
    accepted: int
    duplicates: int
    period_id: int | None  # None: distributed mode, database never reached since start


class Ingestor(Protocol):
    def ingest(self, rows: Sequence[NewInteraction]) -> Ingested:
        """Make ``rows`` durable. Raises StoreUnavailable or BusUnavailable, having
        stored nothing."""
        ...


class DatabaseIngestor:
    """Embedded mode: straight into the database, in one transaction. A batch
    that would pass a cap on new users or items raises CapExceeded (nothing
    stored)."""

    def __init__(self, store: Store, caps: Caps | None = None) -> None:
        self._store = store
        self._caps = caps

    def ingest(self, rows: Sequence[NewInteraction]) -> Ingested:
        result = self._store.ingest(rows, self._caps)
        return Ingested(result.accepted, result.duplicates, result.period_id)


class OpenPeriod:
    """The open period's id, looked up at most once a second; while the database
    is down, the last one known (None if never known)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last: int | None = None
        self._next_check = 0.0

    def current(self) -> int | None:
        if time.monotonic() < self._next_check or not self._lock.acquire(blocking=False):
            return self._last  # fresh enough, or another request is looking it up
        try:
            self._last = self._store.open_period().period_id
            self._next_check = time.monotonic() + PERIOD_TTL_S
        except StoreUnavailable as error:
            self._next_check = time.monotonic() + PERIOD_RETRY_S
            log.warning("open period unknown (database unavailable), answering %s: %s",
                        self._last, error)
        finally:
            self._lock.release()
        return self._last


@contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    """Any Redis failure (connection, MISCONF, OOM, wrong type) as BusUnavailable."""
    try:
        yield
    except RedisError as error:
        raise BusUnavailable(f"redis refused {what}: {error}") from error


class StreamAppender:
    """Distributed mode: onto the Redis interaction stream (see the module doc)."""

    def __init__(self, bus: RedisBus, period: OpenPeriod) -> None:
        self._bus = bus
        self._period = period

    def ingest(self, rows: Sequence[NewInteraction]) -> Ingested:
        with _redis_errors("the append"):
            accepted = self._bus.append_unseen(_first_of_each_event(rows))
        return Ingested(accepted, len(rows) - accepted, self._period.current())


def _first_of_each_event(rows: Sequence[NewInteraction]) -> list[NewInteraction]:
    """``rows`` without later repeats of an event id."""
    seen: set[str] = set()
    kept: list[NewInteraction] = []
    for row in rows:
        if row.event_id is not None:
            if row.event_id in seen:
                continue
            seen.add(row.event_id)
        kept.append(row)
    return kept
