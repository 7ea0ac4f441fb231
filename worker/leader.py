"""Leadership: one worker works, the others wait for its lease to lapse.

While leading, a heartbeat thread refreshes the lease every third of its TTL and
the running job's heartbeat with it. A refresh that fails (the lease lapsed and
someone else may hold it, or the bus is unreachable) sets ``lost``; the worker
then stops at its next safe point, before writing anything.
"""

from __future__ import annotations

import logging
import threading

from smlrec.background import BackgroundLoop, StopLoop
from store import BusUnavailable, LeaderLock, Store, StoreUnavailable

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """This worker is no longer the leader: it must not write anything more."""


class Heartbeat(BackgroundLoop):
    def __init__(self, lock: LeaderLock, store: Store, interval_s: float) -> None:
        super().__init__("smlrec-heartbeat", first_wait=interval_s,
                         join_timeout_s=max(5.0, interval_s))
        self.lock = lock
        self.store = store
        self.interval_s = interval_s
        self.lost = threading.Event()
        self.job_id: str | None = None

    def start(self) -> threading.Thread:
        self.lost.clear()
        return super().start()

    def beat_job(self) -> None:
        """Refresh the running job's heartbeat now."""
        job_id = self.job_id
        if job_id is not None:
            self.store.heartbeat(job_id)

    def step(self) -> float:
        try:
            held = self.lock.refresh()
        except BusUnavailable:
            held = False
        if not held:
            log.warning(
                "lost the worker lease %r; stopping at the next safe point", self.lock.name
            )
            self.lost.set()
            raise StopLoop
        try:
            self.beat_job()
        except StoreUnavailable:
            log.warning("could not record the job heartbeat")
        return self.interval_s
