"""The composition root: the service with the embedded worker wired in. The service
package knows the worker only as a factory it is given (``service.app.WorkerFactory``)."""

from __future__ import annotations

from fastapi import FastAPI

from service import app as service_app
from smlrec.settings import Settings
from worker.embedded import embedded_worker


def create_app(settings: Settings | None = None, *, run_worker: bool | None = None) -> FastAPI:
    """The service (``service.app.create_app``), which runs :func:`embedded_worker`
    beside its API when ``run_worker`` says so (default: in embedded mode)."""
    return service_app.create_app(settings, run_worker=run_worker, worker_factory=embedded_worker)
