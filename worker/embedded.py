"""The worker a service runs beside its API in embedded mode (``smlrec serve`` without
``SMLREC_REDIS_URL``, or ``--with-worker``); ``smlrec.app`` hands it to the service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smlrec.settings import Settings
from store import ArtifactStore, Bus, Store

if TYPE_CHECKING:
    from worker.process import WorkerProcess
    from worker.runner import Worker


def embedded_worker(
    settings: Settings, store: Store, bus: Bus, artifacts: ArtifactStore
) -> Worker | WorkerProcess:
    """The worker in a child process (``SMLREC_WORKER_MODE=process``, the default)
    or on a thread of this one. An in-memory SQLite database exists in this
    process only, so its worker runs here."""
    if settings.worker_mode == "process" and not store.in_memory:
        from worker.process import WorkerProcess

        return WorkerProcess(settings)
    from worker.runner import Worker  # the worker (and training) only where it runs

    return Worker(settings, store, bus, artifacts)
