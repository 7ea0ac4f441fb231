"""Deleted users as the worker applies them: each strategy forgets them (their
rows zeroed, every interaction of theirs it keeps dropped) before it next trains,
once per process (again after a restart: forgetting twice changes nothing), and
every model version written leaves them out (``worker.versions``)."""

from __future__ import annotations

import numpy as np

from sml.strategy import Strategy
from store import Store


class Deletions:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._applied: dict[str, set[int]] = {}

    def apply(self, strategy: Strategy) -> bool:
        """Make ``strategy`` forget the users deleted since it last did; True when
        there were any."""
        applied = self._applied.setdefault(strategy.name, set())
        new = sorted(set(self.store.deleted_user_indices().tolist()) - applied)
        if new:
            strategy.forget_users(np.asarray(new, dtype=np.int64))
            applied.update(new)
        return bool(new)

    def reset(self, name: str | None = None) -> None:
        """States were restored from checkpoints (``name``'s, or all): they forget
        again."""
        if name is None:
            self._applied.clear()
        else:
            self._applied.pop(name, None)
