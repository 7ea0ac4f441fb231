"""Distributed mode: move the interaction stream (Redis, consumer group "workers")
into the database, and make the period cuts written into it.

An entry is acknowledged only after the transaction holding its rows has
committed, so a worker killed in between leaves it pending and it is delivered
again (to this consumer on its next read, or to the next leader through
XAUTOCLAIM). Storing is idempotent by ``event_id``. A row the client sent
without one gets ``f"{entry_id}:{n}"`` (the stream entry's id and the row's
position in it) before it is stored, so a re-delivered entry can never store
such a row twice either.

A cut entry (an admin retrain, or the time rule) closes the open period where
it stands in the stream: every row appended before it is stored first, so every
interaction acknowledged before the request lands in the period it closes. A cut
is made once (the period records its entry id), however often it is delivered.
Acknowledged entries are trimmed from the stream after each batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from store import Bus, Caps, Cut, NewInteraction, Store

log = logging.getLogger(__name__)

Entry = tuple[str, list[NewInteraction] | Cut]


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


class StreamDrainer:
    """Reads the stream as ``consumer``, stores what it reads and makes its cuts.
    ``before_cut`` runs before each cut (the count rule closes what it must
    first); ``caps`` bound the new users and items of a period (rows beyond them
    are dropped and counted on the period)."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        consumer: str,
        entries_per_batch: int = 20,
        caps: Caps | None = None,
        before_cut: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.consumer = consumer
        self.entries_per_batch = entries_per_batch
        self.caps = caps
        self.before_cut = before_cut

    def recover(self, min_idle_ms: int = 0) -> int:
        """Take over the entries other consumers left unacknowledged (a dead leader);
        the next :meth:`drain` stores them. Returns how many were taken."""
        claimed = self.bus.claim_stale(self.consumer, min_idle_ms)
        if claimed:
            log.info("took over %d unacknowledged stream entries", len(claimed))
        return len(claimed)

    def drain(self, block_ms: int = 0, max_seconds: float = 2.0) -> int:
        """Store batches (and make cuts) until the stream is empty or
        ``max_seconds`` have passed, waiting up to ``block_ms`` for the first.
        Returns the rows stored plus the cuts made."""
        deadline = time.monotonic() + max_seconds
        done = 0
        wait = block_ms
        while True:
            entries = self.bus.read(self.consumer, count=self.entries_per_batch, block_ms=wait)
            if not entries:
                return done
            done += self._handle(entries)
            self.bus.trim()
            wait = 0
            if time.monotonic() >= deadline:
                return done

    def _handle(self, entries: list[Entry]) -> int:
        """Rows in runs between cuts: each run stored and acknowledged, then the cut."""
        done = 0
        run: list[tuple[str, list[NewInteraction]]] = []
        for entry_id, payload in entries:
            if isinstance(payload, Cut):
                done += self._flush(run)
                run = []
                done += self._cut(entry_id, payload)
                self.bus.ack([entry_id])
            else:
                run.append((entry_id, payload))
        return done + self._flush(run)

    def _flush(self, run: list[tuple[str, list[NewInteraction]]]) -> int:
        if not run:
            return 0
        stored = self._store(run)
        self.bus.ack([entry_id for entry_id, _ in run])
        return stored

    def _cut(self, entry_id: str, cut: Cut) -> int:
        self.before_cut()
        closed = self.store.close_at_cut(entry_id, job_id=cut.job_id, period_id=cut.period_id)
        if closed is None:
            return 0
        period, job = closed
        log.info("period %d closed at stream cut %s (%d interactions): job %s",
                 period.period_id, entry_id, period.n_interactions, job.job_id)
        return 1

    def _store(self, entries: list[tuple[str, list[NewInteraction]]]) -> int:
        rows = [row for entry_id, batch in entries for row in with_event_ids(entry_id, batch)]
        of_entry = [entry_id for entry_id, batch in entries for _ in batch]
        try:  # rows of a user deleted since their entry was appended are dropped
            return self.store.ingest(rows, self.caps, drop_over_cap=True,
                                     entries=of_entry).accepted
        except ValueError:
            if len(entries) == 1:
                # A row the store rejects would block the stream forever: drop it, loudly.
                log.error("dropping stream entry %s: %d invalid rows", entries[0][0], len(rows))
                return 0
        return sum(self._store([entry]) for entry in entries)
