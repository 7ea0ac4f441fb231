"""Each served version's top lists, computed once in the background.

A model version does not change while it serves, and neither does what it has
seen (the artifact's seen items): every user's top ``depth`` items are the same
for every request until the next swap. So after each swap a background thread
ranks every user of the new version once, with the scorer's exact top-k
(:func:`engine.scorer.top_k`: the items a request would get, their scores to
float rounding, which differs between products of different batch sizes
anyway), and requests read their answer from the lists:

- the items the user interacted with since the model's period (the request's
  ``extra_seen``) are dropped from the list; the first ``k`` left are the
  answer, exactly what scoring with those items masked returns;
- a filter (the items not hidden, or one category's) drops the items it does
  not allow the same way: the first ``k`` allowed items left are the answer,
  since the list holds the user's best items of the whole catalogue;
- when fewer than ``k`` are left, ``k`` exceeds the depth, the request keeps
  seen items in (``exclude_seen=false``), or the user's row is not ranked yet
  (the thread goes through the users in order; a swap starts it over), the
  request is scored as before (:class:`engine.batcher.ScoringBatcher`).

Ranking costs what scoring every user once does, spent once per version per API
process at a lower priority than requests (37-41 s after start-up for 100,000
users x 100,000 items x 64 dims, in the service on a 2-vCPU AVX2 EPYC), and
holds n_users x depth x 8 bytes (40 MB for 100,000 users at depth 50).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from engine.holder import ServingModel, release_freed_memory
from engine.scorer import TopK, extra_pairs, top_k
from engine.threads import start_thread
from smlrec.background import BackgroundThread

log = logging.getLogger(__name__)

DEFAULT_DEPTH = 50
# Users ranked per call: the thread looks for a newer version between calls.
RANK_CHUNK = 1024
# Niceness of the ranking thread (Linux: per thread), so requests come first.
RANKER_NICE = 10


# Which of an array of item indices may be answered (same shape, bool).
Allowed = Callable[[np.ndarray], np.ndarray]


class Listed(NamedTuple):
    """One user's answer from a list: item indices by score descending, and scores."""

    items: list[int]
    scores: list[float]


class Rankings:
    """One version's top lists: row u holds user u's best ``depth`` unseen items
    by score, descending (``lengths[u]`` of them; fewer only when the user has
    not that many unseen items). Rows below ``ready`` are filled."""

    def __init__(self, model: ServingModel, depth: int) -> None:
        self.model = model
        self.depth = depth
        self.items = np.empty((model.n_users, depth), dtype=np.int32)  # (n_users, depth)
        self.scores = np.empty((model.n_users, depth), dtype=np.float32)  # (n_users, depth)
        self.lengths = np.zeros(model.n_users, dtype=np.int32)  # (n_users,)
        self.ready = 0  # rows [0, ready) are filled; only the ranking thread raises it

    def fill(self, start: int, tops: list[TopK]) -> None:
        """Rows ``start``, ``start + 1``, ... from ``tops``; then they count as ready."""
        for row, top in enumerate(tops, start):
            n = len(top.items)
            self.items[row, :n] = top.items
            self.scores[row, :n] = top.scores
            self.lengths[row] = n
        self.ready = max(self.ready, start + len(tops))

    def lookup(self, users: Sequence[int], k: int, extra_seen: Sequence[np.ndarray | None],
               allowed: Allowed | None = None) -> list[Listed | None]:
        """Each user's top ``k`` without its ``extra_seen`` items (item indices),
        and only of the items ``allowed`` lets through (a category, the visible
        items), or None where the list cannot tell it (not ranked yet, ``k``
        beyond the depth, or too few items left once those are dropped: score
        that user). One pass of array operations for all the users."""
        if k > self.depth:
            return [None] * len(users)
        ready = self.ready  # read before the rows: rows filled later count as not ready
        rows_of = np.asarray(users, dtype=np.int64)  # (B,)
        longest = max((len(e) for e in extra_seen if e is not None), default=0)
        # dropping m items leaves k of the first k + m, unless the list ends first;
        # a filter may drop any number: the whole list is read
        window = self.depth if allowed is not None else min(self.depth, k + longest)
        items = self.items[rows_of, :window]  # (B, W)
        lengths = self.lengths[rows_of]  # (B,)
        keep = np.arange(window) < lengths[:, None]  # (B, W)
        if allowed is not None:
            keep &= allowed(items)
        rows, dropped = extra_pairs(extra_seen, self.model.n_items)  # (P,), (P,)
        if len(rows):
            pair, position = np.nonzero(items[rows] == dropped[:, None])
            keep[rows[pair], position] = False
        kept = keep.sum(axis=1)  # (B,)
        first = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # (B, <=k) kept positions
        top_items = np.take_along_axis(items, first, axis=1).tolist()
        top_scores = np.take_along_axis(self.scores[rows_of, :window], first, axis=1).tolist()
        # a list shorter than the depth holds every unseen item: what it keeps is the answer
        answered = (rows_of < ready) & ((kept >= k) | (lengths < self.depth))
        counts = np.minimum(kept, k).tolist()
        return [Listed(top_items[b][:n], top_scores[b][:n]) if ok else None
                for b, (ok, n) in enumerate(zip(answered.tolist(), counts, strict=True))]


class Ranker(BackgroundThread):
    """The thread that ranks each version it is given (:meth:`submit`, after each
    swap); :meth:`rankings` gives the lists of a model, as far as they go."""

    def __init__(self, depth: int = DEFAULT_DEPTH, *, chunk: int = RANK_CHUNK,
                 nice: int = RANKER_NICE,
                 on_progress: Callable[[int], None] | None = None) -> None:
        if depth < 1 or chunk < 1:
            raise ValueError("depth and chunk must be >= 1")
        super().__init__("smlrec-ranker", join_timeout_s=30.0)
        self.depth = depth
        self._chunk = chunk
        self._nice = nice
        self._on_progress = on_progress
        self._cond = threading.Condition()
        self._pending: ServingModel | None = None
        self._current: Rankings | None = None

    def _spawn(self, target: Callable[[], None]) -> threading.Thread:
        return start_thread(target, self.name, 1)

    def _on_stop(self) -> None:
        with self._cond:
            self._pending = None
            self._current = None
            self._cond.notify_all()

    def submit(self, model: ServingModel) -> None:
        """Rank ``model``'s users from now on (the lists of an earlier one are
        dropped at once: only the served version is looked up)."""
        with self._cond:
            self._pending = model
            self._current = None
            self._report(0)
            self._cond.notify_all()

    def rankings(self, model: ServingModel) -> Rankings | None:
        """The lists of ``model`` (None: it is not the version being ranked)."""
        current = self._current
        return current if current is not None and current.model is model else None

    def lookup(self, model: ServingModel, users: Sequence[int], k: int,
               extra_seen: Sequence[np.ndarray | None],
               allowed: Allowed | None = None) -> list[Listed | None]:
        """:meth:`Rankings.lookup` on ``model``'s lists; all None without them."""
        rankings = self.rankings(model)
        if rankings is None:
            return [None] * len(users)
        return rankings.lookup(users, k, extra_seen, allowed)

    def _report(self, ready: int) -> None:
        """Tell ``on_progress`` how many users of the version being ranked are
        (called under the lock, so an older version never reports after a newer
        one was submitted)."""
        if self._on_progress is not None:
            self._on_progress(ready)

    def _next(self) -> ServingModel | None:
        with self._cond:
            while not self.stopping and self._pending is None:
                self._cond.wait()
            model, self._pending = self._pending, None
            return None if self.stopping else model

    def run(self) -> None:
        try:  # Linux: the niceness of this thread alone
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        except (AttributeError, OSError) as error:
            log.debug("ranking thread keeps the process priority: %s", error)
        while (model := self._next()) is not None:
            try:
                self._rank(model)
            except Exception:  # requests go on being scored; the next swap tries again
                log.exception("ranking model version %d failed", model.version)
            # the lists of a version swapped out meanwhile were freed (tens of MB):
            # hand them back to the OS, as the holder does with the version itself
            release_freed_memory()

    def _rank(self, model: ServingModel) -> None:
        rankings = Rankings(model, min(self.depth, max(1, model.n_items)))
        with self._cond:
            if self._pending is not None or self.stopping:
                return  # a newer version came in meanwhile
            self._current = rankings
        began = time.perf_counter()
        for start in range(0, model.n_users, self._chunk):
            if self._pending is not None or self.stopping:
                log.info("ranking of model version %d stopped at %d of %d users (a newer "
                         "version, or shutdown)", model.version, start, model.n_users)
                return
            users = range(start, min(start + self._chunk, model.n_users))
            rankings.fill(start, top_k(model, users, rankings.depth))
            with self._cond:
                if self._current is rankings:
                    self._report(rankings.ready)
        log.info("ranked the %d users of model version %d (top %d) in %.1f s", model.n_users,
                 model.version, rankings.depth, time.perf_counter() - began)
