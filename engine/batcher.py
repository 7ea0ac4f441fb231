"""Coalescing concurrent single-user scoring into one matrix product.

Scoring one user reads the whole item matrix; scoring 64 users at once reads it
once for all of them. Requests hand their user to :class:`ScoringBatcher`; one
scoring thread takes what has queued, keeps collecting while requests keep
coming (until none arrived for ``gap_s``, at most ``max_wait_s`` after the first,
at most ``max_batch`` of them), scores each model's users in one ``top_k`` call,
and resolves every request's future. A lone request waits ``gap_s``; under load
the event loop hands requests over one by one as it parses them, and the gap
rule lets a batch gather what one pass of the loop brings instead of the first
few.

Requests keep the model object they took, so one batch may hold several
versions around a swap: users are grouped by model, by ``exclude_seen`` and by
the items they are scored against (the whole catalogue, or one category's rows:
:func:`engine.filtered.category_top_k`, so concurrent requests for a category
read its rows once).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from engine.filtered import Within, category_top_k
from engine.holder import ServingModel
from engine.scorer import TopK, top_k
from engine.threads import start_thread
from smlrec.background import BackgroundThread

log = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_WAIT_S = 0.008
GAP_S = 0.001


@dataclass(eq=False)
class _Request:
    model: ServingModel
    user: int
    k: int
    exclude_seen: bool
    extra_seen: np.ndarray | None
    # exactly one of the two: a thread's future, or an event loop's future
    future: Future[TopK] | None = None
    loop_future: asyncio.Future[TopK] | None = None
    within: Within | None = None  # one category's items (None: the whole catalogue)


class BatcherStopped(RuntimeError):
    """The batcher is not running (the service is shutting down)."""


class ScoringBatcher(BackgroundThread):
    def __init__(
        self,
        max_batch: int = MAX_BATCH,
        max_wait_s: float = MAX_WAIT_S,
        gap_s: float = GAP_S,
        on_batch: Callable[[int], None] | None = None,
        threads: int | None = None,
    ) -> None:
        """``threads``: torch threads of the scoring thread (None: the count the
        thread inherits, the last one set in the process)."""
        if max_batch < 1 or max_wait_s < 0 or gap_s < 0:
            raise ValueError("max_batch must be >= 1, max_wait_s and gap_s >= 0")
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        self._threads = threads
        self.torch_threads = 0  # what the scoring thread runs with, once started
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.gap_s = min(gap_s, max_wait_s)
        self._on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._first_at = 0.0  # monotonic arrival time of the oldest queued request
        self._last_at = 0.0  # monotonic arrival time of the newest one
        self._cond = threading.Condition()
        self._running = False  # requests are taken (changed under the lock)
        super().__init__("smlrec-scorer", join_timeout_s=10.0)
        self.batches = 0  # counters, for the benchmark and tests
        self.scored = 0

    def _on_start(self) -> None:
        with self._cond:
            self._running = True
        self.torch_threads = self._threads or torch.get_num_threads()

    def _spawn(self, target: Callable[[], None]) -> threading.Thread:
        return start_thread(target, self.name, self._threads)

    def _on_stop(self) -> None:
        """No new request is taken; the thread scores what is queued, then ends."""
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def submit(
        self,
        model: ServingModel,
        user: int,
        k: int,
        exclude_seen: bool = True,
        extra_seen: np.ndarray | None = None,
    ) -> Future[TopK]:
        """Queue one user (dense index in ``model``) for scoring."""
        future: Future[TopK] = Future()
        self._enqueue(_Request(model, user, k, exclude_seen, extra_seen, future=future))
        return future

    async def top_k(
        self,
        model: ServingModel,
        user: int,
        k: int,
        exclude_seen: bool = True,
        extra_seen: np.ndarray | None = None,
        within: Within | None = None,
    ) -> TopK:
        """:meth:`submit` for the running event loop (``within``: score only one
        category's items): the scoring thread resolves all of a batch's futures of
        one loop in a single loop callback."""
        future: asyncio.Future[TopK] = asyncio.get_running_loop().create_future()
        self._enqueue(_Request(model, user, k, exclude_seen, extra_seen, loop_future=future,
                               within=within))
        return await future

    def _enqueue(self, request: _Request) -> None:
        with self._cond:
            if not self._running:
                raise BatcherStopped("the scoring batcher is not running")
            now = time.monotonic()
            if not self._queue:
                self._first_at = now
            self._last_at = now
            self._queue.append(request)
            if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                self._cond.notify()

    def _take(self) -> list[_Request] | None:
        """The next batch (None: stopped and drained)."""
        with self._cond:
            while not self._queue:
                if not self._running:
                    return None
                self._cond.wait()
            while self._running and len(self._queue) < self.max_batch:
                deadline = min(self._first_at + self.max_wait_s, self._last_at + self.gap_s)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            size = min(self.max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(size)]
            if self._queue:
                self._first_at = self._last_at = time.monotonic()
            return batch

    def run(self) -> None:
        while self._serve_next():
            pass

    def _serve_next(self) -> bool:
        """Take the next batch, score it and hand out the answers (False: stopped
        and drained). The batch's requests, and with them the model version they
        were scored with, go out of scope on return: a loop holding them in its
        locals while it waited for the next batch kept a swapped-out version
        alive (tens of MB) for as long as no request needed scoring."""
        batch = self._take()
        if batch is None:
            return False
        self.batches += 1
        self.scored += len(batch)
        if self._on_batch is not None:
            self._on_batch(len(batch))
        groups: dict[tuple[int, bool, int], list[_Request]] = {}
        for request in batch:
            within = id(request.within.items) if request.within is not None else 0
            groups.setdefault((id(request.model), request.exclude_seen, within),
                              []).append(request)
        outcomes: list[tuple[_Request, TopK | BaseException]] = []
        for requests in groups.values():
            outcomes.extend(self._score(requests))
        self._resolve(outcomes)
        return True

    @staticmethod
    def _resolve(outcomes: list[tuple[_Request, TopK | BaseException]]) -> None:
        """Thread futures at once; loop futures in one callback per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[TopK],
                                                            TopK | BaseException]]] = {}
        for request, outcome in outcomes:
            if request.future is not None:
                if isinstance(outcome, BaseException):
                    request.future.set_exception(outcome)
                else:
                    request.future.set_result(outcome)
            elif request.loop_future is not None:
                loop = request.loop_future.get_loop()
                by_loop.setdefault(loop, []).append((request.loop_future, outcome))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, pairs)
            except RuntimeError:  # the loop is closed: nobody waits any more
                log.debug("dropping %d results for a closed event loop", len(pairs))

    @staticmethod
    def _score(requests: list[_Request]) -> list[tuple[_Request, TopK | BaseException]]:
        first = requests[0]
        k = max(r.k for r in requests)
        users, extra = [r.user for r in requests], [r.extra_seen for r in requests]
        try:
            if first.within is None:
                tops = top_k(first.model, users, k, exclude_seen=first.exclude_seen,
                             extra_seen=extra)
            else:
                tops = category_top_k(first.model, users, k, first.within.items,
                                      first.within.matrix, exclude_seen=first.exclude_seen,
                                      extra_seen=extra)
        except Exception as error:  # hand the error to every waiting request
            log.exception("scoring a batch of %d users failed", len(requests))
            return [(request, error) for request in requests]
        outcomes: list[tuple[_Request, TopK | BaseException]] = []
        for request, top in zip(requests, tops, strict=True):
            if request.k < k:
                top = TopK(top.items[: request.k], top.scores[: request.k])
            outcomes.append((request, top))
        return outcomes


def _settle(pairs: list[tuple[asyncio.Future[TopK], TopK | BaseException]]) -> None:
    """On the loop: resolve the futures still waiting (a cancelled request is not)."""
    for future, outcome in pairs:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
