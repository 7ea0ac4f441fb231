"""``smlrec bootstrap``: warm Theta by an offline replay of the stored periods.

A fresh SML strategy runs the period boundary over every closed period in order
(cold start on the first, then the meta step and step 1 on each next one); its
state becomes the worker's checkpoint and its final model a new active version.
It holds the worker lease while it runs, so no worker trains at the same time
(embedded mode keeps that lease inside the server process: stop the server first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch

from sml.strategy import PeriodData, Strategy
from smlrec.settings import Settings
from store import ArtifactStore, Bus, PeriodInfo, Store, make_bus
from worker.boundary import PeriodTrainer
from worker.checkpoint import new_strategy
from worker.leader import Heartbeat, LeadershipLost
from worker.runner import LOCK_NAME

log = logging.getLogger(__name__)

BOOTSTRAP_STRATEGY = "sml"


class WorkerBusy(RuntimeError):
    """Another process holds the worker lease."""


def bootstrap(settings: Settings) -> int | None:
    """Replay the stored periods with a fresh SML strategy and activate its model.
    Returns the new version (None when no period is closed yet)."""
    store = Store.from_url(settings.database_url)
    bus = make_bus(settings)
    try:
        return run_bootstrap(settings, store, bus, ArtifactStore(settings.model_dir))
    finally:
        bus.close()
        store.close()


def run_bootstrap(
    settings: Settings, store: Store, bus: Bus, artifacts: ArtifactStore
) -> int | None:
    torch.set_num_threads(settings.train_threads)
    lock = bus.leader_lock(LOCK_NAME, settings.lock_ttl_seconds)
    if not lock.acquire(blocking=False):
        raise WorkerBusy("a worker holds the worker lease: stop it before bootstrapping")
    heartbeat = Heartbeat(lock, store, settings.lock_ttl_seconds / 3)
    heartbeat.start()

    def check_leader() -> None:
        if heartbeat.lost.is_set():
            raise LeadershipLost("the worker lease was lost during the bootstrap")

    try:
        periods = [p for p in store.list_periods() if p.status != "open"]
        if not periods:
            log.warning("no closed period to bootstrap from")
            return None
        last = periods[-1].period_id
        job = store.create_job(last, "bootstrap")
        store.claim_job(job.job_id)
        heartbeat.job_id = job.job_id
        try:
            strategy = new_strategy(settings, BOOTSTRAP_STRATEGY)
            train_seconds = _replay_periods(store, strategy, periods, check_leader,
                                            settings.type_weight_map)
            trainer = PeriodTrainer(settings, store, bus, artifacts, check_leader)
            version = trainer.commit(last, strategy, train_seconds, tag=f"bootstrap-{job.job_id}")
            for period in periods:
                if period.status != "trained":
                    store.mark_trained(period.period_id)
        except BaseException as error:
            heartbeat.job_id = None
            store.finish_job(job.job_id, "failed", error=f"{type(error).__name__}: {error}")
            raise
        heartbeat.job_id = None
        store.finish_job(job.job_id, "succeeded", model_version=version)
        log.info(
            "bootstrap over periods %d..%d: version %d is active",
            periods[0].period_id,
            last,
            version,
        )
        return version
    finally:
        heartbeat.stop()
        lock.release()


def _replay_periods(
    store: Store, strategy: Strategy, periods: Sequence[PeriodInfo],
    check_leader: Callable[[], None], type_weights: dict[str, float],
) -> float:
    """Every stored period through the strategy's boundary, oldest first, each
    interaction with its training weight; the seconds the last one took (what the
    version records as its training time)."""
    train_seconds = 0.0
    for period in periods:
        arrays = store.period_arrays(period.period_id, type_weights)
        started = time.perf_counter()
        strategy.boundary(PeriodData(arrays.users, arrays.items, arrays.n_users, arrays.n_items,
                                     arrays.weights))
        train_seconds = time.perf_counter() - started
        log.info("bootstrap: period %d (%d interactions) in %.2f s",
                 period.period_id, len(arrays), train_seconds)
        check_leader()
    return train_seconds
