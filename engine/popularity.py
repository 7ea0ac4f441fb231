"""Popularity before any model: the most interacted items of the open period,
read from the store and cached for a few seconds."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from store import Store, StoreUnavailable, popular_items

log = logging.getLogger(__name__)

TTL_S = 5.0


@dataclass(frozen=True)
class Popular:
    items: np.ndarray  # (<= POPULAR_SIZE,) int64 item idx, most interacted first
    item_ids: list[str]  # external id of every item idx the store knows


EMPTY = Popular(np.empty(0, dtype=np.int64), [])


class StorePopularity:
    """Top items by count in the open period (the period before it while the open
    one is still empty), cached for ``ttl_s`` seconds. While the database does
    not answer, the last list is served; with none yet, StoreUnavailable is raised."""

    def __init__(self, store: Store, ttl_s: float = TTL_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: Popular | None = None
        self._expires = 0.0
        self._down_until = 0.0  # after a failure with nothing cached: fail fast until then

    def get(self) -> Popular:
        cached = self._cached
        if cached is not None and time.monotonic() < self._expires:
            return cached
        with self._lock:  # one refresh at a time; the others wait for it
            if self._cached is not None and time.monotonic() < self._expires:
                return self._cached
            if self._cached is None and time.monotonic() < self._down_until:
                raise StoreUnavailable("database unavailable (popularity not known yet)")
            try:
                fresh = self._compute()
            except StoreUnavailable:
                if self._cached is None:
                    self._down_until = time.monotonic() + self._ttl_s
                    raise
                self._expires = time.monotonic() + self._ttl_s  # retry after the TTL
                return self._cached
            if len(fresh.items):  # an empty log is cheap to re-read and soon fills
                self._cached, self._expires = fresh, time.monotonic() + self._ttl_s
            return fresh

    def _compute(self) -> Popular:
        period = self._store.open_period()
        items = self._store.period_arrays(period.period_id).items
        if len(items) == 0 and period.period_id > 0:
            items = self._store.period_arrays(period.period_id - 1).items
        if len(items) == 0:
            return EMPTY
        return Popular(popular_items(items), self._store.item_ids())
