"""Keeping a replica on the active model version.

A background thread checks the store's active version every
``swap_poll_seconds``, and at once when the bus announces a version (the
announcement only wakes it: the store stays the authority, so a late or lost
message can neither roll a replica back by mistake nor strand it). The same
thread records the training time of every version recorded meanwhile, and
follows the item metadata (engine.catalog): a change written on any replica
reaches this one within ``swap_poll_seconds``, and at once where it was written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from engine.catalog import Catalog
from engine.forget import Forgotten
from engine.holder import ModelHolder
from engine.metrics import ServiceMetrics
from smlrec.background import BackgroundLoop
from store import Bus, BusUnavailable, Store, StoreUnavailable

log = logging.getLogger(__name__)


class VersionSync(BackgroundLoop):
    def __init__(
        self,
        holder: ModelHolder,
        store: Store,
        bus: Bus,
        metrics: ServiceMetrics,
        poll_seconds: float,
        forgotten: Forgotten | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self._holder = holder
        self._catalog = catalog
        self._forgotten = forgotten
        self._unsubscribe_forget: Callable[[], None] | None = None
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._poll_seconds = poll_seconds
        super().__init__("smlrec-version-sync", first_wait=poll_seconds)
        self._unsubscribe: Callable[[], None] | None = None
        self._last_version: int | None = None  # newest version whose duration is recorded
        self._baseline_known = False
        if catalog is not None:
            catalog.on_write(self.wake)

    def start(self) -> threading.Thread:
        """Subscribe to announcements (polling alone if the bus is down) and start
        the thread."""
        if self.thread is not None and self.is_alive():
            return self.thread
        self._observe_new_versions()
        try:
            self._unsubscribe = self._bus.subscribe_active(self._on_announcement)
            if self._forgotten is not None:
                self._unsubscribe_forget = self._bus.subscribe_forget(self._on_deletion)
        except BusUnavailable as error:
            log.warning("no announcements, polling only: %s", error)
        return super().start()

    def stop(self, timeout: float | None = None) -> None:
        for unsubscribe in (self._unsubscribe, self._unsubscribe_forget):
            if unsubscribe is None:
                continue
            try:
                unsubscribe()
            except Exception:  # a broken connection on the way out
                log.debug("error stopping an announcement subscription", exc_info=True)
        self._unsubscribe = self._unsubscribe_forget = None
        super().stop(timeout)

    def _on_deletion(self, user_idx: int, user_id: str) -> None:
        if self._forgotten is not None:
            self._forgotten.forget(user_idx, user_id, self._holder.current)

    def _on_announcement(self, version: int) -> None:
        log.info("version %d announced", version)
        self.wake()

    def step(self) -> float:
        try:
            self._holder.sync_quietly()
            if self._forgotten is not None:
                self._forgotten.refresh(self._holder.current)
            if self._catalog is not None:
                self._catalog.refresh(self._holder.current)
            self._observe_new_versions()
        except Exception:  # keep checking whatever a poll meets
            log.exception("active-version check failed")
        return self._poll_seconds

    def _observe_new_versions(self) -> None:
        """Record the training time of versions recorded since the last check
        (versions older than this process are not counted)."""
        try:
            latest = self._store.latest_version()
            if not self._baseline_known:
                self._last_version, self._baseline_known = latest, True
                return
            if latest is None or latest == self._last_version:
                return
            for version in range((self._last_version or 0) + 1, latest + 1):
                info = self._store.get_version(version)
                if info is not None:
                    self._metrics.observe_retrain(info.train_seconds)
                self._last_version = version
        except StoreUnavailable as error:
            log.debug("version durations not checked: %s", error)
