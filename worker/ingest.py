"""Distributed mode: move the interaction stream (Redis, consumer group "workers")
into the database.

An entry is acknowledged only after the transaction holding its rows has
committed, so a worker killed in between leaves it pending and it is delivered
again (to this consumer on its next read, or to the next leader through
XAUTOCLAIM). Storing is idempotent by ``event_id``. A row the client sent
without one gets ``f"{entry_id}:{n}"`` (the stream entry's id and the row's
position in it) before it is stored, so a re-delivered entry can never store
such a row twice either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from store import Bus, NewInteraction, Store

log = logging.getLogger(__name__)

Entry = tuple[str, list[NewInteraction]]


def stream_event_id(entry_id: str, position: int) -> str:
    """The event id of the ``position``-th row of stream entry ``entry_id`` that came
    without one."""
    return f"{entry_id}:{position}"


def with_event_ids(entry_id: str, rows: Sequence[NewInteraction]) -> list[NewInteraction]:
    return [
        row
        if row.event_id is not None
        else row._replace(event_id=stream_event_id(entry_id, n))
        for n, row in enumerate(rows)
    ]


class StreamIngestor:
    """Reads the stream as ``consumer`` and stores what it reads."""

    def __init__(self, store: Store, bus: Bus, consumer: str, entries_per_batch: int = 20) -> None:
        self.store = store
        self.bus = bus
        self.consumer = consumer
        self.entries_per_batch = entries_per_batch

    def recover(self, min_idle_ms: int = 0) -> int:
        """Take over the entries other consumers left unacknowledged (a dead leader);
        the next :meth:`drain` stores them. Returns how many were taken."""
        claimed = self.bus.claim_stale(self.consumer, min_idle_ms)
        if claimed:
            log.info("took over %d unacknowledged stream entries", len(claimed))
        return len(claimed)

    def drain(self, block_ms: int = 0, max_seconds: float = 2.0) -> int:
        """Store batches until the stream is empty or ``max_seconds`` have passed,
        waiting up to ``block_ms`` for the first. Returns the rows stored."""
        deadline = time.monotonic() + max_seconds
        stored = 0
        wait = block_ms
        while True:
            entries = self.bus.read(self.consumer, count=self.entries_per_batch, block_ms=wait)
            if not entries:
                return stored
            stored += self._store(entries)
            self.bus.ack([entry_id for entry_id, _ in entries])
            wait = 0
            if time.monotonic() >= deadline:
                return stored

    def _store(self, entries: list[Entry]) -> int:
        rows = [row for entry_id, batch in entries for row in with_event_ids(entry_id, batch)]
        try:
            return self.store.ingest(rows).accepted
        except ValueError:
            if len(entries) == 1:
                # A row the store rejects would block the stream forever: drop it, loudly.
                log.error("dropping stream entry %s: %d invalid rows", entries[0][0], len(rows))
                return 0
        return sum(self._store([entry]) for entry in entries)
