"""Users whose data was deleted, as this replica serves them: unknown. A deleted
user keeps their dense index in the store (anonymised); every model version written
before the deletion still maps their external id to it, so each version this
replica loads, and the one it serves when it learns of a deletion, drops those
indices from its user map (the user then gets the unknown-user answer), and the
recent set forgets their items. A replica learns of a deletion at once when it
handles the request, within milliseconds from the bus, and at the next version
check from the store (the bus may lose a message)."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from engine.holder import ServingModel
from store import Store, StoreUnavailable

if TYPE_CHECKING:
    from engine.recent import RecentInteractions

log = logging.getLogger(__name__)

RECHECK_MARGIN_S = 60.0  # deletions committed with a clock this far behind are still found


def drop_users(model: ServingModel, indices: set[int]) -> int:
    """Take the users at ``indices`` out of ``model``'s user map; returns how many."""
    dropped = 0
    for idx in indices:
        if idx < len(model.user_ids):
            user_id = model.user_ids[idx]
            if user_id and model.user_index.get(user_id) == idx:
                model.user_index.pop(user_id, None)
                dropped += 1
    return dropped


class Forgotten:
    """The deleted users' indices this replica knows of, applied to its models."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._indices: set[int] = set()
        self._checked: float | None = None  # newest deletion time read from the store
        self.recent: RecentInteractions | None = None

    def __contains__(self, idx: int) -> bool:
        return idx in self._indices

    def apply(self, model: ServingModel) -> None:
        """Before ``model`` serves: its deleted users are unknown."""
        with self._lock:
            indices = set(self._indices)
        dropped = drop_users(model, indices)
        if dropped:
            log.info("version %d: %d deleted users left out", model.version, dropped)

    def forget(self, idx: int, user_id: str, model: ServingModel | None) -> None:
        """A deletion this replica handled or was told of."""
        with self._lock:
            self._indices.add(int(idx))
        if model is not None:
            drop_users(model, {int(idx)})
        if self.recent is not None and user_id:
            self.recent.forget(user_id)

    def refresh(self, model: ServingModel | None) -> None:
        """Read deletions from the store since the last check (all the first time)."""
        try:
            since = None if self._checked is None else self._checked - RECHECK_MARGIN_S
            found = self._store.deleted_users(since)
        except StoreUnavailable as error:
            log.debug("deletions not checked: %s", error)
            return
        if not found:
            if self._checked is None:
                self._checked = 0.0
            return
        with self._lock:
            new = {idx for idx, _ in found} - self._indices
            self._indices |= new
        first = self._checked is None
        self._checked = max([self._checked or 0.0] + [at for _, at in found])
        if new and model is not None:
            drop_users(model, new)
        if new and self.recent is not None and not first:  # at start it was built after
            self._forget_recent(since)

    def _forget_recent(self, since: float | None) -> None:
        """Deleted users' items out of the recent set, by the hash of their ids (the
        database keeps no id of theirs)."""
        assert self.recent is not None
        try:
            hashes = self._store.deleted_id_hashes(since)
        except StoreUnavailable as error:
            log.debug("recent set not checked for deleted users: %s", error)
            return
        self.recent.forget_hashed(hashes)
