"""The FastAPI application: ``create_app(settings)`` builds it; its lifespan
opens the store, the artifact store and the bus, loads the active model, keeps
it in sync, runs the worker in embedded mode, and closes everything on exit.

Nothing is opened before the lifespan starts, and all state lives on
``app.state`` (``settings``, ``metrics``, ``runtime``).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Protocol

import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from engine.batcher import ScoringBatcher
from engine.catalog import Catalog
from engine.forget import Forgotten
from engine.holder import ModelHolder
from engine.metrics import ServiceMetrics
from engine.popularity import StorePopularity
from engine.quantized import INT8_MIN_SPEEDUP, int8_speedup
from engine.ranker import Ranker
from engine.recent import RecentInteractions
from engine.recommender import Recommender
from engine.sync import VersionSync
from service.body import document_models
from service.dashboard import install_dashboard
from service.docs import install_docs
from service.errors import install_error_handlers
from service.fastpath import RecommendationsFastPath
from service.ingest import DatabaseIngestor, Ingestor, OpenPeriod, StreamAppender
from service.interaction_schemas import InteractionBatch
from service.middleware import RequestMetricsMiddleware
from service.routes import (
    admin,
    export,
    interactions,
    items,
    ops,
    recommendations,
    strategies,
    users,
)
from service.runtime import Runtime
from smlrec.preflight import resolve_admin_token
from smlrec.settings import Settings, get_settings
from store import ArtifactStore, Bus, Caps, RedisBus, Store, StoreUnavailable, make_bus
from store.migrate import upgrade


class EmbeddedWorker(Protocol):
    """What the service needs of a worker it runs beside its API."""

    def start(self) -> threading.Thread: ...

    def stop(self, timeout: float | None = None, abandon: bool = False) -> None: ...


# settings, store, bus, artifacts -> the worker (``worker.embedded.embedded_worker``)
WorkerFactory = Callable[[Settings, Store, Bus, ArtifactStore], EmbeddedWorker]

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_S = 3.0  # the whole stop must fit in the 10 s a container is given
# How long a thread may hold the GIL while another waits for it (CPython's default
# is 5 ms). Swaps, recent-interaction rebuilds (and the embedded worker in thread
# mode) run Python on background threads; a shorter slice keeps the event loop
# answering.
GIL_SWITCH_INTERVAL_S = 0.001

DESCRIPTION = """\
Top-K recommendations from a matrix-factorisation model that is retrained at
every period boundary with Sequential Meta-Learning and hot-swapped in.

Client endpoints take `X-API-Key` when `SMLREC_API_KEY` is set; admin endpoints
take `Authorization: Bearer <SMLREC_ADMIN_TOKEN>`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    run_worker: bool | None = None,
    worker_factory: WorkerFactory | None = None,
) -> FastAPI:
    """The service. ``run_worker`` (default: in embedded mode only, i.e. without
    ``SMLREC_REDIS_URL``) runs the retraining worker ``worker_factory`` builds beside
    the API; ``smlrec.app.create_app`` gives it the worker package's."""
    settings = settings if settings is not None else get_settings()
    app = FastAPI(
        title="smlrec",
        version="1",
        summary="A recommender that stays fresh (Sequential Meta-Learning retraining)",
        description=DESCRIPTION,
        lifespan=_lifespan,
        docs_url=None,  # service.docs serves both pages from local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.run_worker = (not settings.redis_url) if run_worker is None else run_worker
    if app.state.run_worker and worker_factory is None:
        raise ValueError("a service that runs the worker needs a worker_factory")
    app.state.worker_factory = worker_factory
    app.state.metrics = ServiceMetrics()
    app.add_middleware(RecommendationsFastPath)  # inside the metrics: counted the same
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics,
                       access=settings.access_log)
    install_error_handlers(app)
    for module in (interactions, recommendations, items, admin, strategies, users, export,
                   ops):
        app.include_router(module.router)
    document_models(app, [InteractionBatch])  # the body of POST /v1/interactions
    install_docs(app)
    install_dashboard(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    with ExitStack() as stack:
        app.state.runtime = await run_in_threadpool(_start, app, stack)
        try:
            yield
        finally:
            del app.state.runtime
            await run_in_threadpool(stack.close)


def _start(app: FastAPI, stack: ExitStack) -> Runtime:
    """Open everything; each part registers its teardown on ``stack`` (run in
    reverse order, also when a later part fails to start). The order matters:
    process-wide knobs before any thread starts (threads read them when they do),
    the store before the holder (it loads the active version), the holder before
    what scores with it, the version sync and the worker once the runtime exists,
    and the collector's freeze last (it takes in everything alive by then)."""
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    _set_process_knobs(settings, stack)
    if settings.is_sqlite:
        upgrade(settings.database_url)
    store = Store.from_url(settings.database_url)
    stack.callback(store.close)
    artifacts = ArtifactStore(settings.model_dir)
    bus = make_bus(settings)
    stack.callback(bus.close)
    holder, forgotten, catalog = _holder(settings, store, artifacts, metrics)
    recent, batcher, scoring_pool, ranker = _start_scoring(settings, store, holder, metrics,
                                                           stack)
    forgotten.recent = recent
    open_period = OpenPeriod(store)
    runtime = Runtime(
        settings=settings,
        admin_token=resolve_admin_token(settings),
        store=store,
        artifacts=artifacts,
        bus=bus,
        metrics=metrics,
        holder=holder,
        recommender=Recommender(store, StorePopularity(store), metrics, recent, batcher,
                                scoring_pool, ranker, catalog=catalog, **_fold_in(settings)),
        ingestor=_ingestor(settings, store, bus, open_period),
        open_period=open_period,
        recent=recent,
        batcher=batcher,
        forgotten=forgotten,
        catalog=catalog,
    )
    _start_sync(runtime, stack)
    if app.state.run_worker:
        worker = app.state.worker_factory(settings, store, bus, artifacts)
        worker.start()
        # the service stops within seconds: a boundary under way is abandoned (its job
        # is queued again), never waited for
        stack.callback(worker.stop, WORKER_STOP_TIMEOUT_S, True)
    # Everything alive now (modules, the loaded model, the framework) lives as long
    # as the service: out of the collector's sight, a full collection walks only
    # what requests made since (ingestion bodies make thousands of tracked objects
    # that reach the older generations: bench/RESULTS.md, "A frozen start-up heap").
    gc.freeze()
    stack.callback(gc.unfreeze)
    log.info(
        "service started (%s mode, model version %s, worker %s)",
        "distributed" if settings.redis_url else "embedded",
        holder.version,
        "on" if app.state.run_worker else "off",
    )
    return runtime


def _fold_in(settings: Settings) -> dict[str, Any]:
    """The recommender's fold-in settings: the L2 weight, None where it is off
    (``SMLREC_FOLD_IN``), and whether known users are moved too."""
    return {"fold_in_l2": settings.fold_in_l2 if settings.fold_in else None,
            "fold_in_known": settings.fold_in_known}


def _start_sync(runtime: Runtime, stack: ExitStack) -> None:
    """The thread that keeps the replica on the active version, the deleted users
    and the item metadata."""
    sync = VersionSync(runtime.holder, runtime.store, runtime.bus, runtime.metrics,
                       runtime.settings.swap_poll_seconds, runtime.forgotten, runtime.catalog)
    sync.start()
    stack.callback(sync.stop)


def _holder(settings: Settings, store: Store, artifacts: ArtifactStore,
            metrics: ServiceMetrics) -> tuple[ModelHolder, Forgotten, Catalog]:
    """The model holder, serving the active version from the first request on, with
    the deleted users left out of every version it serves and the item metadata
    laid out for each before it serves."""
    holder = ModelHolder(store, artifacts, metrics, quantize=_int8_scoring(settings))
    forgotten = Forgotten(store)
    forgotten.refresh(None)
    holder.before_install(forgotten.apply)
    catalog = Catalog(store)
    catalog.refresh(None)
    holder.before_install(catalog.prepare)
    holder.sync_quietly()
    return holder, forgotten, catalog


def _set_process_knobs(settings: Settings, stack: ExitStack) -> None:
    """The interpreter's switch interval, and torch's thread count for batch requests
    (one thread each by default, not a pool per call): torch keeps the count per
    thread and a thread takes the last value set when it first computes, so both are
    set before any thread starts (the micro-batcher sets its own)."""
    previous_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(previous_interval, GIL_SWITCH_INTERVAL_S))
    stack.callback(sys.setswitchinterval, previous_interval)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.scoring_threads)
    stack.callback(torch.set_num_threads, previous_threads)


def _start_scoring(
    settings: Settings, store: Store, holder: ModelHolder, metrics: ServiceMetrics,
    stack: ExitStack,
) -> tuple[RecentInteractions, ScoringBatcher, ThreadPoolExecutor, Ranker | None]:
    """What answers recommendation requests besides the holder: the recent
    interactions, the micro-batcher of single-user requests (one scoring thread that
    may use every CPU but the event loop's: bench/RESULTS.md, "Micro-batcher
    threads"), the pool of batch requests (at most one
    thread per CPU, each with its score buffer) and the precomputed lists."""
    recent = _recent(settings, store, holder)
    stack.callback(recent.stop)
    batcher = ScoringBatcher(on_batch=metrics.scoring_batch.observe,
                             threads=settings.batcher_threads or max(1, _usable_cpus() - 1))
    batcher.start()
    stack.callback(batcher.stop)
    scoring_pool = ThreadPoolExecutor(
        max_workers=_usable_cpus(), thread_name_prefix="smlrec-scoring",
        initializer=torch.set_num_threads, initargs=(settings.scoring_threads,))
    stack.callback(scoring_pool.shutdown)
    ranker = _ranker(settings, holder, metrics)
    if ranker is not None:
        stack.callback(ranker.stop)
    return recent, batcher, scoring_pool, ranker


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _int8_scoring(settings: Settings) -> bool:
    """``SMLREC_INT8_SCORING``: true or false as set; ``auto`` measures whether
    int8 products are faster than float32 ones on this CPU (once per process, on
    the scoring threads' torch thread count) and logs what it found."""
    if isinstance(settings.int8_scoring, bool):
        return settings.int8_scoring
    speedup = int8_speedup()
    use = speedup >= INT8_MIN_SPEEDUP
    log.info("int8 scoring %s: int8 products run at %.2fx float32's speed on this CPU "
             "(used from %.1fx)", "on" if use else "off", speedup, INT8_MIN_SPEEDUP)
    return use


def _recent(settings: Settings, store: Store, holder: ModelHolder) -> RecentInteractions:
    """Recent interactions in memory, rebuilt at each swap; in distributed mode
    also every few seconds (the worker writes what other replicas accepted)."""
    recent = RecentInteractions(store, periodic=bool(settings.redis_url))
    current = holder.current
    if current is not None:
        try:
            recent.rebuild(current.period_id)
        except StoreUnavailable as error:
            log.warning("recent interactions not loaded yet: %s", error)
            recent.request_rebuild(current.period_id)
    holder.before_install(lambda model: recent.prepare(model.period_id))
    holder.on_install(lambda model: recent.request_rebuild(model.period_id))
    recent.start()
    return recent


def _ranker(settings: Settings, holder: ModelHolder, metrics: ServiceMetrics) -> Ranker | None:
    """The thread that precomputes each served version's top lists
    (``SMLREC_PRECOMPUTE_DEPTH`` items for up to ``SMLREC_PRECOMPUTE_USERS`` users;
    depth 0: none, every request is scored). A version taken up from the store
    serves once its active users are ranked (at most
    ``SMLREC_PRECOMPUTE_WAIT_SECONDS`` later)."""
    if settings.precompute_depth == 0:
        return None
    ranker = Ranker(settings.precompute_depth, capacity=settings.precompute_users,
                    on_progress=metrics.ranked_users.set)
    ranker.start()
    holder.on_install(ranker.submit)
    if settings.precompute_wait_seconds > 0:
        wait_s = settings.precompute_wait_seconds
        holder.stage_with(lambda model: ranker.stage(model, wait_s))
    if holder.current is not None:
        ranker.submit(holder.current)
    return ranker


def _ingestor(settings: Settings, store: Store, bus: Bus, period: OpenPeriod) -> Ingestor:
    if not settings.redis_url:
        return DatabaseIngestor(store, Caps(*settings.caps))
    if not isinstance(bus, RedisBus):
        raise TypeError(f"distributed mode needs the Redis bus, got {type(bus).__name__}")
    return StreamAppender(bus, period)

