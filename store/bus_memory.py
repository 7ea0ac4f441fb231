"""The in-process bus of embedded mode: the same interface as the Redis bus,
with consumer-group semantics, leases and locks kept in this process's memory."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from store.dto import Cut, NewInteraction

log = logging.getLogger(__name__)

EVENT_TTL_S = 300.0
Entry = tuple[str, list[NewInteraction] | Cut]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    rows: list[NewInteraction] | Cut


def _copy(payload: list[NewInteraction] | Cut) -> list[NewInteraction] | Cut:
    return payload if isinstance(payload, Cut) else list(payload)


class InProcessLeaderLock:
    """A named lease shared by the locks of one :class:`InProcessBus`: held by one
    owner at a time, expiring ``ttl_s`` after the last acquire or refresh."""

    def __init__(self, bus: InProcessBus, name: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.name = name
        self.ttl_s = ttl_s
        self._bus = bus
        self._token = uuid.uuid4().hex

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lease; with ``blocking``, wait (up to ``timeout`` s) for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._bus._lease(self.name, self._token, self.ttl_s, only_if_owner=False):
                return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(min(0.05, self.ttl_s / 4))

    def refresh(self) -> bool:
        """Extend the lease by ``ttl_s``; False if it is no longer ours."""
        return self._bus._lease(self.name, self._token, self.ttl_s, only_if_owner=True)

    def release(self) -> None:
        """Give the lease up if it is still ours."""
        self._bus._unlease(self.name, self._token)


class InProcessBus:
    """Bus for one process. ``publish_active`` calls the subscribers
    synchronously on the publishing thread; callback errors are logged."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._subscribers: dict[int, Callable[[int], None]] = {}
        self._forget_subscribers: dict[int, Callable[[int, str], None]] = {}
        self._sub_ids = itertools.count()
        self._new_entries = threading.Condition(self._mutex)
        self._entry_seq = itertools.count()
        self._undelivered: list[Entry] = []
        self._pending: dict[str, _Pending] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._events: dict[str, float] = {}

    # ---- active version ---------------------------------------------------

    def publish_active(self, version: int) -> None:
        with self._mutex:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(int(version))
            except Exception:
                log.exception("active-version subscriber failed on version %d", version)

    def subscribe_active(self, callback: Callable[[int], None]) -> Callable[[], None]:
        with self._mutex:
            key = next(self._sub_ids)
            self._subscribers[key] = callback

        def unsubscribe() -> None:
            with self._mutex:
                self._subscribers.pop(key, None)

        return unsubscribe

    def publish_forget(self, user_idx: int, user_id: str) -> None:
        with self._mutex:
            callbacks = list(self._forget_subscribers.values())
        for callback in callbacks:
            try:
                callback(int(user_idx), user_id)
            except Exception:
                log.exception("deletion subscriber failed on user index %d", user_idx)

    def subscribe_forget(self, callback: Callable[[int, str], None]) -> Callable[[], None]:
        with self._mutex:
            key = next(self._sub_ids)
            self._forget_subscribers[key] = callback

        def unsubscribe() -> None:
            with self._mutex:
                self._forget_subscribers.pop(key, None)

        return unsubscribe

    def stream_mark(self) -> str | None:
        with self._mutex:
            newest = [entry_id for entry_id, _ in self._undelivered] + list(self._pending)
        return max(newest, key=_id_key) if newest else None

    # ---- interaction stream -----------------------------------------------

    def append(self, rows: Sequence[NewInteraction]) -> int:
        with self._mutex:
            return self._append_locked(rows)

    def _append_locked(self, rows: Sequence[NewInteraction]) -> int:
        if not rows:
            return 0
        entry_id = f"{int(time.time() * 1000)}-{next(self._entry_seq)}"
        self._undelivered.append((entry_id, list(rows)))
        self._new_entries.notify_all()
        return len(rows)

    def append_cut(self, cut: Cut) -> str:
        with self._mutex:
            entry_id = f"{int(time.time() * 1000)}-{next(self._entry_seq)}"
            self._undelivered.append((entry_id, cut))
            self._new_entries.notify_all()
            return entry_id

    def backlog(self) -> int:
        with self._mutex:
            return len(self._undelivered) + len(self._pending)

    def trim(self) -> int:
        return 0  # acknowledged entries are dropped at once

    def persistence_gap(self) -> str | None:
        return "the in-process bus keeps its stream in memory"

    def append_unseen(self, rows: Sequence[NewInteraction]) -> int:
        with self._mutex:
            now = time.time()
            if len(self._events) > 100_000:  # drop expired marks
                self._events = {k: t for k, t in self._events.items() if t > now}
            fresh = [row for row in rows if row.event_id is None
                     or self._events.get(row.event_id, 0.0) <= now]
            for row in fresh:
                if row.event_id is not None:
                    self._events[row.event_id] = now + EVENT_TTL_S
            return self._append_locked(fresh)

    def read(self, consumer: str, count: int = 100, block_ms: int = 1000) -> list[Entry]:
        """This consumer's unacknowledged entries first; else up to ``count`` new
        ones, waiting up to ``block_ms`` (0: don't wait) for the first."""
        deadline = time.monotonic() + max(block_ms, 0) / 1000
        with self._mutex:
            now = time.time()
            mine = [(eid, p) for eid, p in self._pending.items() if p.consumer == consumer]
            if mine:
                for _, pending in mine[:count]:
                    pending.delivered_at = now
                return [(eid, _copy(p.rows)) for eid, p in mine[:count]]
            while not self._undelivered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._new_entries.wait(remaining)
            taken, self._undelivered = self._undelivered[:count], self._undelivered[count:]
            now = time.time()
            for entry_id, rows in taken:
                self._pending[entry_id] = _Pending(consumer, now, rows)
            return [(eid, _copy(rows)) for eid, rows in taken]

    def ack(self, entry_ids: Sequence[str]) -> int:
        with self._mutex:
            return sum(self._pending.pop(eid, None) is not None for eid in entry_ids)

    def claim_stale(self, consumer: str, min_idle_ms: int) -> list[Entry]:
        """Take over entries delivered at least ``min_idle_ms`` ago and not
        acknowledged (their consumer died); they become this consumer's pending
        entries, so the next :meth:`read` delivers them too."""
        cutoff = time.time() - min_idle_ms / 1000
        with self._mutex:
            claimed: list[Entry] = []
            now = time.time()
            for entry_id, pending in self._pending.items():
                if pending.delivered_at <= cutoff:
                    pending.consumer, pending.delivered_at = consumer, now
                    claimed.append((entry_id, _copy(pending.rows)))
            return claimed

    def pending_count(self) -> int:
        """Entries delivered to some consumer and not yet acknowledged."""
        with self._mutex:
            return len(self._pending)

    # ---- leader lock ------------------------------------------------------

    def leader_lock(self, name: str, ttl_s: float) -> InProcessLeaderLock:
        return InProcessLeaderLock(self, name, ttl_s)

    def _lease(self, name: str, token: str, ttl_s: float, only_if_owner: bool) -> bool:
        with self._mutex:
            now = time.monotonic()
            holder = self._leases.get(name)
            held_by_other = holder is not None and holder[0] != token and holder[1] > now
            ours = holder is not None and holder[0] == token and holder[1] > now
            if held_by_other or (only_if_owner and not ours):
                return False
            self._leases[name] = (token, now + ttl_s)
            return True

    def _unlease(self, name: str, token: str) -> None:
        with self._mutex:
            holder = self._leases.get(name)
            if holder is not None and holder[0] == token:
                del self._leases[name]

    # ---- lifecycle --------------------------------------------------------

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._mutex:
            self._subscribers.clear()
            self._new_entries.notify_all()
