"""Making a batch of interactions durable.

Embedded mode: one database transaction (``Store.ingest``), all or nothing.

Distributed mode: one Redis stream entry per request (the worker moves it into
the database). Repeated event ids are reported early from Redis marks, in this
order, so that a failed request leaves nothing behind:

1. drop repeats within the request; look the remaining event ids up (read-only);
2. append the rows whose ids are not marked, as one entry (all or nothing);
3. only then mark their ids. An id another request marked in between counts as a
   duplicate here; both entries reach the stream and the database, the authority
   on duplicates, keeps one row.

Marking first would lose data: if the append then failed, the client's retry
would find its own ids marked and be told they were duplicates.
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

from store import BusUnavailable, NewInteraction, RedisBus, Store, StoreUnavailable
from store.bus_redis import EVENT_TTL_S

log = logging.getLogger(__name__)

PERIOD_TTL_S = 1.0  # how long a looked-up open period id is reused
PERIOD_RETRY_S = 5.0  # after a database error, how long to answer from the last known id

# The bus's seen-event mark (SET NX with the bus's TTL) for a whole batch in one
# call; returns how many ids were marked already (by another request).
_MARK_SCRIPT = """
local already = 0
for _, key in ipairs(KEYS) do
  if not redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) then already = already + 1 end
end
return already
"""


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
    """Embedded mode: straight into the database, in one transaction."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def ingest(self, rows: Sequence[NewInteraction]) -> Ingested:
        result = self._store.ingest(rows)
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


class StreamIngestor:
    """Distributed mode: onto the Redis interaction stream (see the module doc)."""

    def __init__(self, bus: RedisBus, period: OpenPeriod) -> None:
        self._bus = bus
        self._period = period
        self._mark_script = bus.client.register_script(_MARK_SCRIPT)

    def ingest(self, rows: Sequence[NewInteraction]) -> Ingested:
        unique = _first_of_each_event(rows)
        marked = self._marked([r.event_id for r in unique if r.event_id is not None])
        fresh = [r for r in unique if r.event_id is None or r.event_id not in marked]
        late = 0
        if fresh:
            with _redis_errors("the append"):
                self._bus.append(fresh)
            late = self._mark([r.event_id for r in fresh if r.event_id is not None])
        accepted = len(fresh) - late
        return Ingested(accepted, len(rows) - accepted, self._period.current())

    def _marked(self, event_ids: list[str]) -> set[str]:
        """Event ids already marked as seen (read-only)."""
        if not event_ids:
            return set()
        with _redis_errors("the event lookup"):  # one MGET, not a command per id
            found = self._bus.client.mget([self._bus.key("event", e) for e in event_ids])
        return {e for e, value in zip(event_ids, found, strict=True) if value is not None}

    def _mark(self, event_ids: list[str]) -> int:
        """Mark ids appended just now; returns how many another request marked
        first. A failure is logged only: the rows are durable already."""
        if not event_ids:
            return 0
        try:
            with _redis_errors("the event marks"):  # one script call, not a command per id
                keys = [self._bus.key("event", e) for e in event_ids]
                return int(self._mark_script(keys=keys, args=[EVENT_TTL_S]))
        except BusUnavailable as error:
            log.warning("%d appended event ids left unmarked: %s", len(event_ids), error)
            return 0


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
