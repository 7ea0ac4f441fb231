"""The thread that ranks each version's users into its top lists (engine.ranked).

Which users, and when:

- A version's users are ranked in this order: first the users active under
  the version served before it (those whose requests found their list, then
  those whose requests found none: up to 65,536 of them), then any user whose
  request finds no list (as they come), then the others, newest first, until
  the lists' capacity (``SMLREC_PRECOMPUTE_USERS``) is reached. A user without
  a list is scored per request and ranked next: into a free slot, or once none
  is left, into the slot of a user no request has looked up (so the lists go to
  the users who ask, however many users the model has).
- A replica that takes up a new version from the store stages it
  (:meth:`Ranker.stage`): the version served now keeps answering from its own
  lists while the new version's active users are ranked, and the swap follows
  once they are (or after ``SMLREC_PRECOMPUTE_WAIT_SECONDS``); the rest are
  ranked after the swap. So a swap does not turn the active users' requests
  into scoring requests while a background thread competes with them for the
  CPU. An activation (a rollback) serves at once and ranks afterwards.

Ranking costs what scoring those users once does, at a lower priority than
requests (about 0.25 ms a user at 100,000 items x 64 dims on one core); a
version's users are ranked once per API process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from engine.holder import ServingModel, release_freed_memory
from engine.ranked import (
    DEFAULT_CAPACITY,
    DEFAULT_DEPTH,
    Allowed,
    Listed,
    Rankings,
    list_may_answer,
)
from engine.scorer import top_k
from engine.threads import start_thread
from smlrec.background import BackgroundThread

log = logging.getLogger(__name__)

# Users ranked per call: the thread looks for newer work between calls.
RANK_CHUNK = 1024
# Niceness of the ranking thread (Linux: per thread), so requests come first.
RANKER_NICE = 10
# Users without a list whose requests wait to be ranked, at most (the oldest go first).
WANTED_MAX = 65_536


class _Job:
    """One version's lists and the users still to rank for it."""

    def __init__(self, rankings: Rankings, order: np.ndarray, urgent: int) -> None:
        self.rankings = rankings
        self.order = order  # (n,) users in the order they are ranked
        self.position = 0  # order[:position] is picked
        self.done = 0  # order[:done] has its lists
        self.urgent = urgent  # a stage is ready once order[:urgent] has its lists
        self.wanted: deque[int] = deque(maxlen=WANTED_MAX)  # asked for, to rank now
        # asked for without a list, slots free or not: active, ranked first next version
        self.asked: deque[int] = deque(maxlen=WANTED_MAX)
        self.started = time.perf_counter()
        self.finished = False
        self.failed = False  # ranking raised: nothing more is ranked for this version

    @property
    def model(self) -> ServingModel:
        return self.rankings.model

    @property
    def staged(self) -> bool:
        """Whether the users to rank before the swap are."""
        return self.failed or self.done >= self.urgent or not self.rankings.room

    def next_users(self, chunk: int) -> np.ndarray:
        """Up to ``chunk`` users to rank next, none with a list: the wanted ones
        first (they may take slots no request looked up), then the order, into
        free slots only; fewer only when nothing else is left."""
        if self.failed:
            return np.empty(0, dtype=np.int64)
        wanted = [self.wanted.popleft() for _ in range(min(chunk, len(self.wanted)))]
        users = self.rankings.unranked(np.asarray(wanted, dtype=np.int64))
        asking = len(users)
        limit = min(chunk, self.rankings.room)
        while len(users) < limit and self.position < len(self.order):
            take = self.order[self.position : self.position + limit - len(users)]
            self.position += len(take)
            users = self.rankings.unranked(np.concatenate([users, take]))
        return users[: max(limit, asking)]


class Ranker(BackgroundThread):
    """Ranks each version it is given: :meth:`stage` before a swap, :meth:`submit`
    after it; :meth:`lookup` answers from the served version's lists."""

    def __init__(self, depth: int = DEFAULT_DEPTH, *, capacity: int = DEFAULT_CAPACITY,
                 chunk: int = RANK_CHUNK, nice: int = RANKER_NICE,
                 on_progress: Callable[[int], None] | None = None) -> None:
        if depth < 1 or chunk < 1 or capacity < 1:
            raise ValueError("depth, capacity and chunk must be >= 1")
        super().__init__("smlrec-ranker", join_timeout_s=30.0)
        self.depth = depth
        self.capacity = capacity
        self._chunk = chunk
        self._nice = nice
        self._on_progress = on_progress
        self._cond = threading.Condition()
        self._serving: _Job | None = None  # the lists of the version served
        self._staged: _Job | None = None  # the lists of the version about to be
        self._idle = False

    def _spawn(self, target: Callable[[], None]) -> threading.Thread:
        return start_thread(target, self.name, 1)

    def _on_stop(self) -> None:
        with self._cond:
            self._serving = self._staged = None
            self._cond.notify_all()

    def _job(self, model: ServingModel) -> _Job:
        """``model``'s lists to fill: the users active under the served version
        first, then the others newest first (as many as can get a slot)."""
        rankings = Rankings(model, min(self.depth, max(1, model.n_items)), self.capacity)
        serving = self._serving
        active = np.empty(0, np.int64)
        if serving is not None:
            active = np.concatenate([serving.rankings.active(),
                                     np.asarray(serving.asked, dtype=np.int64)])
            _, first = np.unique(active, return_index=True)
            active = active[np.sort(first)]
        active = active[active < model.n_users][: rankings.capacity]
        newest = model.n_users - 1
        others = np.arange(newest, max(-1, newest - rankings.capacity - len(active)), -1,
                           dtype=np.int64)
        return _Job(rankings, np.concatenate([active, others]), urgent=len(active))

    def stage(self, model: ServingModel, wait_s: float) -> bool:
        """Rank the users active now into ``model``'s lists before ``model`` serves:
        True once they are ranked; False after ``wait_s`` seconds, when another
        version is staged or submitted meanwhile, or when the thread stops."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            job = self._job(model)
            self._staged = job
            self._cond.notify_all()
            while not job.staged:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopping or self._staged is not job:
                    return False
                self._cond.wait(remaining)
        log.info("ranked the %d active users of model version %d before serving it (%.1f s)",
                 job.urgent, model.version, time.perf_counter() - job.started)
        return True

    def submit(self, model: ServingModel) -> None:
        """``model`` serves from now on: its staged lists go on (a stage of another
        version is dropped), else its ranking starts; the earlier lists go."""
        with self._cond:
            staged, self._staged = self._staged, None
            self._serving = staged if staged is not None and staged.model is model \
                else self._job(model)
            self._report(self._serving.rankings.filled)
            self._cond.notify_all()

    def rankings(self, model: ServingModel) -> Rankings | None:
        """The lists of ``model`` (None: it is not the version served)."""
        serving = self._serving
        return serving.rankings if serving is not None and serving.model is model else None

    def lookup(self, model: ServingModel, users: Sequence[int], k: int,
               extra_seen: Sequence[np.ndarray | None],
               allowed: Allowed | None = None, members: int | None = None
               ) -> list[Listed | None]:
        """:meth:`Rankings.lookup` on ``model``'s lists (all None without them);
        users with no list are ranked next, while a slot is free or held by a
        user no request looked up, and first for the next version either way.
        ``members``: how many items ``allowed`` lets through, where known; the lists
        are not read when they would rarely answer (:func:`list_may_answer`)."""
        serving = self._serving
        if serving is None or serving.model is not model:
            return [None] * len(users)
        rankings = serving.rankings
        if members is None or list_may_answer(rankings.depth, k, members, model.n_items):
            listed = rankings.lookup(users, k, extra_seen, allowed)
        else:
            rankings.touch(users)
            listed = [None] * len(users)
        if None in listed:
            missing = rankings.missing(users).tolist()
            serving.asked.extend(missing)
            if missing and (rankings.room or rankings.reusable()):
                serving.wanted.extend(missing)
                if self._idle:
                    with self._cond:
                        self._cond.notify_all()
        return listed

    def _report(self, ready: int) -> None:
        """Tell ``on_progress`` how many users of the served version have a list
        (called under the lock, so an older version never reports after a newer
        one was submitted)."""
        if self._on_progress is not None:
            self._on_progress(ready)

    def _pick(self) -> tuple[_Job, np.ndarray] | None:
        """The next users to rank, and for which version: a staged version first."""
        for job in (self._staged, self._serving):
            if job is None:
                continue
            users = job.next_users(self._chunk)
            if len(users):
                return job, users
            if job is self._serving and not job.finished and not job.wanted:
                job.finished = True
                log.info("ranked %d users of model version %d (top %d) in %.1f s",
                         job.rankings.filled, job.model.version, job.rankings.depth,
                         time.perf_counter() - job.started)
        return None

    def _next(self, last: _Job | None) -> tuple[_Job, np.ndarray] | None:
        """Wait for work (None: stopping). The memory of lists dropped since
        ``last`` was picked is handed back to the OS first."""
        with self._cond:
            work = self._pick()
            while work is None and not self.stopping:
                self._idle = True
                self._cond.wait()
                self._idle = False
                work = self._pick()
            if self.stopping:
                return None
        if last is not None and work is not None and work[0] is not last:
            release_freed_memory()  # tens of MB when an earlier version's lists went
        return work

    def run(self) -> None:
        try:  # Linux: the niceness of this thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        except (AttributeError, OSError) as error:
            log.debug("ranking thread keeps the process priority: %s", error)
        last: _Job | None = None
        while (work := self._next(last)) is not None:
            job, users = work
            picked, last = job.position, job
            try:
                tops = top_k(job.model, users, job.rankings.depth)
            except Exception:  # requests go on being scored; the next version tries again
                log.exception("ranking model version %d failed", job.model.version)
                with self._cond:
                    job.failed = True
                    self._cond.notify_all()
                continue
            with self._cond:
                job.rankings.fill(users, tops)
                job.done = picked
                if job is self._serving:
                    self._report(job.rankings.filled)
                self._cond.notify_all()  # a stage may be waiting for these
