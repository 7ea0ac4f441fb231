"""The messaging port: "version V is active" announcements, the interaction
stream of distributed mode, leader election and API-side de-duplication.

Two implementations share the interface: :class:`InProcessBus` (embedded mode)
and :class:`RedisBus` (distributed mode). :func:`make_bus` picks one from the
settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from smlrec.settings import Settings
from store.bus_memory import InProcessBus, InProcessLeaderLock
from store.bus_redis import RedisBus, RedisLeaderLock
from store.dto import Cut, NewInteraction

__all__ = [
    "Bus",
    "InProcessBus",
    "InProcessLeaderLock",
    "LeaderLock",
    "RedisBus",
    "RedisLeaderLock",
    "make_bus",
]

StreamEntry = tuple[str, list[NewInteraction] | Cut]  # rows, or a period cut


class LeaderLock(Protocol):
    """A named lease held by one owner at a time, lapsing ``ttl_s`` after the
    last acquire or refresh unless refreshed."""

    name: str
    ttl_s: float

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lease; with ``blocking``, wait (up to ``timeout`` s) for it."""
        ...

    def refresh(self) -> bool:
        """Extend the lease if it is still ours; False means leadership is lost."""
        ...

    def release(self) -> None:
        """Give the lease up if it is still ours."""
        ...


class Bus(Protocol):
    def publish_active(self, version: int) -> None:
        """Announce that ``version`` is the one to serve."""
        ...

    def subscribe_active(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call ``callback(version)`` for every later announcement; returns a
        function that stops the subscription. (Redis: on a listener thread that
        survives reconnections; in-process: on the publishing thread.) Raises
        BusUnavailable if the bus cannot be reached now."""
        ...

    def publish_forget(self, user_idx: int, user_id: str) -> None:
        """Announce that the user ``user_id`` (dense index ``user_idx``) was deleted."""
        ...

    def subscribe_forget(self, callback: Callable[[int, str], None]) -> Callable[[], None]:
        """Call ``callback(user_idx, user_id)`` for every later deletion (as
        :meth:`subscribe_active`)."""
        ...

    def stream_mark(self) -> str | None:
        """The newest entry of the interaction stream (None: none yet)."""
        ...

    def append(self, rows: Sequence[NewInteraction]) -> int:
        """Durably append a batch to the interaction stream; returns its size."""
        ...

    def append_unseen(self, rows: Sequence[NewInteraction]) -> int:
        """Append, as one entry, the rows whose event id is not marked seen (rows
        without one always), and mark those ids, in one atomic step; returns how
        many rows were appended. ``rows`` must not repeat an event id. Nothing is
        appended or marked when the call fails. The marks last the
        de-duplication window; the database stays the authority on duplicates,
        they only report them early."""
        ...

    def append_cut(self, cut: Cut) -> str:
        """Append a period cut after everything appended so far; returns its id."""
        ...

    def backlog(self) -> int:
        """Stream entries the worker has not acknowledged yet (waiting to be stored)."""
        ...

    def trim(self) -> int:
        """Delete acknowledged entries; returns how many."""
        ...

    def persistence_gap(self) -> str | None:
        """Why acknowledged stream entries could be lost on a restart, or None."""
        ...

    def read(self, consumer: str, count: int = 100, block_ms: int = 1000) -> list[StreamEntry]:
        """Entries for ``consumer`` of group "workers": its unacknowledged ones
        first, then new ones (waiting up to ``block_ms``; 0: don't wait)."""
        ...

    def ack(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries once their rows are committed; returns how many."""
        ...

    def claim_stale(self, consumer: str, min_idle_ms: int) -> list[StreamEntry]:
        """Take over entries unacknowledged for ``min_idle_ms`` (dead consumers)."""
        ...

    def pending_count(self) -> int:
        """Entries delivered and not yet acknowledged."""
        ...

    def leader_lock(self, name: str, ttl_s: float) -> LeaderLock:
        """A lease named ``name``, exclusive among everyone sharing this bus."""
        ...

    def ping(self) -> None:
        """Raise BusUnavailable unless the bus answers."""
        ...

    def close(self) -> None:
        """Stop subscriptions and release connections."""
        ...


def make_bus(settings: Settings) -> Bus:
    """:class:`RedisBus` (keys under ``settings.redis_prefix``) when
    ``settings.redis_url`` is set, else :class:`InProcessBus`."""
    if settings.redis_url:
        return RedisBus(settings.redis_url, prefix=settings.redis_prefix,
                        event_ttl_s=settings.dedup_window_seconds)
    return InProcessBus()
