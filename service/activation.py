"""Serving a version on every replica, as the admin routes ask it (an activation,
or the choice of a strategy): loaded and verified here first, made the store's
active version, served here at once, then announced (the replicas also poll)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from engine.holder import ModelHolder
from store import Bus, BusUnavailable, Store

log = logging.getLogger(__name__)


def serve_everywhere(version: int, store: Store, bus: Bus, holder: ModelHolder,
                     also: Callable[[], None] | None = None) -> None:
    """Serve ``version``; ``also`` is stored in the same step as the active version.
    Raises ModelLoadError (the artifact cannot be loaded) or KeyError (no such
    version any more), having changed nothing."""
    def commit() -> None:
        store.set_active_version(version)
        if also is not None:
            also()

    holder.activate(version, commit)
    try:
        bus.publish_active(version)
    except BusUnavailable as error:
        log.warning("version %d activated but not announced (replicas poll): %s", version, error)
