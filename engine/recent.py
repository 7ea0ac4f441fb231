"""What users interacted with since the served model's period began, held in
memory so that a recommendation never waits on the database.

A model's artifact lists the items each user saw up to the end of its period.
Interactions logged since (and those of the model's own period, re-read as a
safeguard) live here, by external id: user id -> item ids. The set is

- rebuilt from the database whenever a model version is swapped in (then it
  covers the periods from that version's period on), and, in distributed mode,
  every few seconds (the worker writes what other replicas accepted);
- extended at once by every batch this process accepts (read-your-writes).

Rows accepted while a rebuild reads the database are kept aside and added to the
rebuilt set, so none is lost between the read and the switch. Past
``max_entries`` the set stops tracking (``covers`` is then False) and callers ask
the database per request, as they do before the first rebuild.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable

import numpy as np

from engine.holder import settle_long_lived_objects
from smlrec.background import BackgroundLoop
from store import NewInteraction, Store, StoreUnavailable

log = logging.getLogger(__name__)

MAX_ENTRIES = 5_000_000
MIN_REFRESH_S = 1.0
REFRESH_COST_FACTOR = 10.0  # a periodic rebuild may use at most ~1/10 of the time
CHUNK_ROWS = 4096  # rows mapped and merged between two pauses of a background rebuild
BACKGROUND_SHARE = 0.2  # of the GIL a background rebuild takes while requests wait


class Pacer:
    """Spreads Python work on a background thread out in time: :meth:`pause`
    sleeps long enough that the work since the last pause took at most ``share``
    of the wall clock. A thread running Python gives the GIL up only when the
    switch interval runs out, so it and the event loop take turns: unpaced, a
    rebuild halves the loop's throughput while it runs; paced, requests barely
    feel it, and the work (not urgent: the previous set stays correct meanwhile)
    takes 1/share times as long. ``slept`` is the time spent pausing."""

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self._factor = (1 - share) / share
        self._since = time.perf_counter()
        self.slept = 0.0

    def pause(self) -> None:
        busy = time.perf_counter() - self._since
        if self._factor and busy > 0:
            time.sleep(busy * self._factor)
            self.slept += busy * self._factor
        self._since = time.perf_counter()


class RecentInteractions(BackgroundLoop):
    def __init__(
        self, store: Store, *, periodic: bool, max_entries: int = MAX_ENTRIES
    ) -> None:
        self._store = store
        self._periodic = periodic
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._rebuild_lock = threading.Lock()
        self._by_user: dict[str, set[str]] = {}
        self._entries = 0
        self._from_period: int | None = None  # covers periods >= this; None: nothing yet
        self._overflow = False
        self._pending: list[tuple[str, str]] | None = None  # rows added during a rebuild
        self._forgotten_meanwhile: set[str] = set()  # users deleted during a rebuild
        self._user_ids: list[str] = []  # dense idx -> external id (append-only in the store)
        self._item_ids: list[str] = []
        self._wanted_period: int | None = None
        super().__init__("smlrec-recent", first_wait=MIN_REFRESH_S if periodic else None)

    # ---- reading ----------------------------------------------------------

    def covers(self, period_id: int) -> bool:
        """True when the set holds every interaction from ``period_id`` on."""
        start = self._from_period
        return start is not None and start <= period_id and not self._overflow

    def items_of(self, user_id: str, item_index: dict[str, int]) -> np.ndarray | None:
        """Dense indices (in ``item_index``) of the items ``user_id`` interacted
        with since the covered period began; None when there are none."""
        items = self._by_user.get(user_id)
        if not items:
            return None
        found = [item_index[i] for i in list(items) if i in item_index]
        return np.asarray(found, dtype=np.int64) if found else None

    @property
    def entries(self) -> int:
        return self._entries

    # ---- writing ----------------------------------------------------------

    def add(self, rows: Iterable[NewInteraction]) -> None:
        """Rows this process has just made durable."""
        pairs = [(r.user_id, r.item_id) for r in rows]
        with self._lock:
            if self._pending is not None:
                self._pending.extend(pairs)
            self._add_pairs(pairs)

    def forget(self, user_id: str) -> None:
        """A deleted user's items go, also from a rebuild under way (it may have read
        them before the deletion)."""
        with self._lock:
            items = self._by_user.pop(user_id, None)
            self._entries -= len(items) if items else 0
            if self._pending is not None:
                self._pending = [pair for pair in self._pending if pair[0] != user_id]
                self._forgotten_meanwhile.add(user_id)

    def forget_hashed(self, id_hashes: set[str]) -> int:
        """Forget the users whose ids hash (sha256) to one of ``id_hashes`` (a deletion
        found in the database, whose message this replica missed); returns how many."""
        with self._lock:
            users = list(self._by_user) + [user for user, _ in self._pending or ()]
        found = {user for user in users
                 if hashlib.sha256(user.encode("utf-8")).hexdigest() in id_hashes}
        for user in found:
            self.forget(user)
        return len(found)

    def _add_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Into the served set, minding its size bound."""
        self._entries += _merge(self._by_user, pairs)
        if self._entries > self._max_entries and not self._overflow:
            log.warning("more than %d recent interactions: seen items come from the "
                        "database per request until the next model version",
                        self._max_entries)
            self._overflow = True
            self._by_user, self._entries = {}, 0

    def rebuild(self, from_period: int, pacer: Pacer | None = None) -> None:
        """Read every interaction of the periods from ``from_period`` on and serve
        from that (with ``pacer``: pausing between chunks). Raises StoreUnavailable
        (the previous set stays)."""
        with self._rebuild_lock:  # one at a time: each keeps aside what arrives meanwhile
            self._rebuild(from_period, pacer)

    def _rebuild(self, from_period: int, pacer: Pacer | None) -> None:
        started = time.perf_counter()
        with self._lock:
            self._pending, self._forgotten_meanwhile = [], set()
        try:
            fresh, entries = self._read(from_period, pacer)
        except BaseException:
            with self._lock:
                self._pending = None
            raise
        with self._lock:
            pending, self._pending = self._pending or [], None
            for user_id in self._forgotten_meanwhile:
                entries -= len(fresh.pop(user_id, ()))
            if entries > self._max_entries:
                self._by_user, self._entries, self._overflow = {}, 0, True
            else:
                self._by_user, self._entries, self._overflow = fresh, entries, False
                self._add_pairs(pending)
            self._from_period = from_period
        settle_long_lived_objects()
        log.debug("recent interactions from period %d: %d in %.3f s", from_period,
                  entries, time.perf_counter() - started)

    def _read(self, from_period: int, pacer: Pacer | None) -> tuple[dict[str, set[str]], int]:
        by_user: dict[str, set[str]] = {}
        entries = 0
        periods = [p.period_id for p in self._store.list_periods() if p.period_id >= from_period]
        for period_id in periods:
            arrays = self._store.period_arrays(period_id)
            for start in range(0, len(arrays.users), CHUNK_ROWS):
                if pacer is not None:
                    pacer.pause()
                chunk = slice(start, start + CHUNK_ROWS)
                users, items = self._external(arrays.users[chunk], arrays.items[chunk])
                entries += _merge(by_user, zip(users, items, strict=True))
                if entries > self._max_entries:
                    return by_user, entries
        return by_user, entries

    def _external(self, users: np.ndarray, items: np.ndarray) -> tuple[list[str], list[str]]:
        if int(users.max()) >= len(self._user_ids):  # only the new ids: append-only
            self._user_ids = self._user_ids + self._store.user_ids(start=len(self._user_ids))
        if int(items.max()) >= len(self._item_ids):
            self._item_ids = self._item_ids + self._store.item_ids(start=len(self._item_ids))
        user_ids, item_ids = self._user_ids, self._item_ids
        return [user_ids[u] for u in users.tolist()], [item_ids[i] for i in items.tolist()]

    # ---- background rebuilds -------------------------------------------------

    def prepare(self, from_period: int) -> None:
        """Before a version of ``from_period`` is served: if the set does not cover
        it (a rollback to an earlier period), rebuild now, so that no request of
        the new version has to read its seen items from the database. Raises
        StoreUnavailable."""
        if not self.covers(from_period):
            self.rebuild(from_period)

    def request_rebuild(self, from_period: int) -> None:
        """Rebuild from ``from_period`` soon (on the background thread). Nothing to
        do when the set already starts there (e.g. a swap between versions of one
        period); a set starting earlier would still cover it, but holds periods the
        new version already knows, so it is rebuilt to let them go."""
        self._wanted_period = from_period  # a rebuild under way checks it when done
        if from_period == self._from_period and not self._overflow:
            return
        self.wake()

    def pacer_for(self, from_period: int) -> Pacer | None:
        """How a background rebuild from ``from_period`` runs: paced while the set
        still covers it (the rebuild only lets older periods go), at full speed
        when requests meanwhile read the database (an earlier period, an overflow)."""
        return Pacer(BACKGROUND_SHARE) if self.covers(from_period) else None

    def step(self) -> float | None:
        """Rebuild from the period the served version asked for (periodic: also
        refresh every while, at a pace that keeps it a small share of the time)."""
        wanted = self._wanted_period
        again = MIN_REFRESH_S if self._periodic else None
        if wanted is None or (not self._periodic and wanted == self._from_period
                              and not self._overflow):
            return again
        started = time.perf_counter()
        pacer = self.pacer_for(wanted)
        try:
            self.rebuild(wanted, pacer)
        except StoreUnavailable as error:
            log.warning("recent interactions not refreshed: %s", error)
        except Exception:  # keep the thread alive whatever a rebuild meets
            log.exception("recent interactions rebuild failed")
        if self._wanted_period != wanted:  # another swap asked for another period
            self.wake()
        if not self._periodic:
            return None
        worked = time.perf_counter() - started - (pacer.slept if pacer else 0.0)
        return max(MIN_REFRESH_S, REFRESH_COST_FACTOR * worked)

def _merge(target: dict[str, set[str]], pairs: Iterable[tuple[str, str]]) -> int:
    """Add (user id, item id) pairs to ``target``; returns how many were new."""
    added = 0
    for user_id, item_id in pairs:
        items = target.get(user_id)
        if items is None:
            target[user_id] = {item_id}
            added += 1
        elif item_id not in items:
            items.add(item_id)
            added += 1
    return added
