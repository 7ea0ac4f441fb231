"""The worker loop: lead (or wait), ingest, cut periods, run retrain jobs.

One iteration, as the leader:

1. (distributed mode) drain the interaction stream into the database, making
   the period cuts written into it where they stand;
2. apply the period rule: close complete periods and queue their retrain (the
   time rule in distributed mode appends a cut to the stream instead);
3. every few seconds, fail jobs whose worker died (heartbeat older than three
   lease TTLs) and queue a fresh job for their period;
4. when no boundary is training, start the next job (``worker.boundary``) on a
   training thread: jobs run in period order, and the loop goes on draining
   and cutting while it trains.

A retrain that fails is tried again after ``SMLREC_RETRAIN_BACKOFF_SECONDS``,
then twice as long each time (at most an hour), ``SMLREC_RETRAIN_ATTEMPTS``
tries in all; then its job fails and its period is ``failed`` (later periods go
on) until an admin asks again (``POST /v1/admin/periods/{id}/retrain``). A
database or Redis outage is not a failed try: the loop pauses with bounded
exponential backoff (0.5 s doubling up to 30 s) and resumes where it stopped.

``stop`` is honoured between steps (a warm stop): a boundary under way
finishes. ``abandon`` (the embedded worker stopping with its service) does not
wait for it: the job is queued again as it was and the next worker runs it
(every step of a boundary is safe to repeat).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import torch

from smlrec.background import BackgroundThread
from smlrec.settings import Settings
from store import (
    ArtifactStore,
    Bus,
    BusUnavailable,
    Caps,
    Cut,
    JobInfo,
    Store,
    StoreUnavailable,
)
from worker import jobs
from worker.boundary import BoundaryResult, PeriodTrainer
from worker.ingest import StreamDrainer
from worker.leader import Heartbeat, LeadershipLost
from worker.periods import close_due_periods, time_cut_due
from worker.retention import prune

log = logging.getLogger(__name__)

LOCK_NAME = "worker"
STALE_TTLS = 3.0  # a running job is stale once its heartbeat is this many lease TTLs old
MAX_BACKOFF_S = 30.0
ABANDON_WAIT_S = 2.0  # how long an abandoning worker waits for its training thread


def backoff_seconds(failures: int) -> float:
    """Pause after the ``failures``-th consecutive outage: 0.5 s doubling, at most 30 s."""
    return float(min(MAX_BACKOFF_S, 0.5 * 2 ** max(failures - 1, 0)))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Abandoned(LeadershipLost):
    """The worker is stopping without waiting for the boundary under way."""


@dataclass
class _Training:
    """A boundary running on its thread, and how it ended."""

    job: JobInfo
    thread: threading.Thread
    result: BoundaryResult | None = None
    error: BaseException | None = None


class Worker(BackgroundThread):
    """The retraining worker. ``store``, ``bus`` and ``artifacts`` belong to the
    caller, who closes them; the worker releases its lease when it stops."""

    def __init__(
        self, settings: Settings, store: Store, bus: Bus, artifacts: ArtifactStore
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.artifacts = artifacts
        self.distributed = bool(settings.redis_url)
        self.stale_after_s = STALE_TTLS * settings.lock_ttl_seconds
        # stop(None) waits for the boundary under way, however long it takes
        super().__init__("smlrec-worker", join_timeout_s=None)
        self._abandon = threading.Event()
        self._lock = bus.leader_lock(LOCK_NAME, settings.lock_ttl_seconds)
        self._heartbeat = Heartbeat(self._lock, store, settings.lock_ttl_seconds / 3)
        self._trainer = PeriodTrainer(settings, store, bus, artifacts, self._check_leader)
        self._trainer.challengers.lowest_priority = True  # boundaries run on their own threads
        self._rule = settings.period_rule
        users, items = settings.caps
        self._ingestor = (
            StreamDrainer(store, bus, consumer_name(), caps=Caps(users, items),
                           before_cut=self._close_by_count)
            if self.distributed else None
        )
        self._leading = False
        self._ready = False  # state restored since taking the lead
        self._training: _Training | None = None
        self._time_cut_sent: tuple[int, float | None] | None = None  # (period, opened_at)
        self._next_stale_check = 0.0
        self._stopping = self._stop  # the event work() was given: no new job once it is set
        self._abandoning = self._abandon

    # ---- lifecycle ------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def _on_start(self) -> None:
        self._abandon.clear()

    def run(self) -> None:
        """The thread :meth:`start` starts (embedded mode): :meth:`work` until stopped."""
        self.work(self._stop, self._abandon)

    def stop(self, timeout: float | None = None, abandon: bool = False) -> None:
        """Ask the loop to stop and wait up to ``timeout`` s; with ``abandon`` it
        does not wait for a boundary under way (its job is queued again)."""
        if abandon:
            self._abandon.set()
        super().stop(timeout)

    def work(self, stop: threading.Event, abandon: threading.Event | None = None) -> None:
        """Work until ``stop`` is set (and the boundary under way has finished,
        unless ``abandon`` is set too); always gives the lease up on the way out."""
        self._stopping = stop
        self._abandoning = abandon if abandon is not None else threading.Event()
        failures = 0
        log.info(
            "worker started (%s mode, period rule %s, strategy %s)",
            "distributed" if self.distributed else "embedded",
            self.settings.period,
            self.settings.strategy,
        )
        try:
            while not (stop.is_set() and self._training is None) \
                    and not self._abandoning.is_set():
                try:
                    if not self._leading and not self._take_lead():
                        stop.wait(min(self.settings.worker_poll_seconds, self._lock.ttl_s / 2))
                        continue
                    idle = self._iteration()
                    failures = 0
                except LeadershipLost:
                    self._step_down()
                    continue
                except (StoreUnavailable, BusUnavailable) as error:
                    failures += 1
                    delay = backoff_seconds(failures)
                    log.warning("%s; retrying in %.1f s", error, delay)
                    self._abandoning.wait(delay)
                    continue
                except Exception:
                    failures += 1
                    delay = backoff_seconds(failures)
                    log.exception("unexpected error in the worker loop; retrying in %.1f s", delay)
                    self._abandoning.wait(delay)
                    continue
                if self._heartbeat.lost.is_set():
                    self._step_down()
                elif idle:
                    self._wait_idle()
        finally:
            self._leave()
            log.info("worker stopped")

    def _wait_idle(self) -> None:
        training = self._training
        if training is not None:
            training.thread.join(self.settings.worker_poll_seconds)
        else:
            self._abandoning.wait(self.settings.worker_poll_seconds)

    # ---- leadership -----------------------------------------------------------

    def _take_lead(self) -> bool:
        if self._training is not None:  # a lost lead's boundary is still stopping
            self._training.thread.join(self.settings.worker_poll_seconds)
            self._collect_lost()
            return False
        if not self._lock.acquire(blocking=False):
            return False
        self._leading, self._ready = True, False
        self._heartbeat.start()
        log.info("this worker is the leader")
        return True

    def _step_down(self) -> None:
        if not self._leading:
            return
        self._heartbeat.stop()
        self._heartbeat.job_id = None
        self._lock.release()
        self._leading = self._ready = False
        log.info("this worker gave up the lead")

    def _leave(self) -> None:
        """On the way out: an abandoned boundary's job goes back to the queue."""
        training = self._training
        if training is not None:
            self._abandoning.set()
            training.thread.join(ABANDON_WAIT_S)
            if training.thread.is_alive() or training.error is not None \
                    or training.result is None:
                jobs.requeue(self.store, training.job)
            else:
                self._settle(training)
            self._training = None
        self._step_down()

    def _check_leader(self) -> None:
        if self._abandoning.is_set():
            raise Abandoned("the worker is stopping")
        if self._heartbeat.lost.is_set():
            raise LeadershipLost("the worker lease was lost")

    def _on_lead(self) -> None:
        """State to restore once leading: the strategy checkpoint, the stream
        entries a dead leader left unacknowledged, its stale job."""
        self._trainer.restore()
        if self._ingestor is not None:
            self._ingestor.recover(min_idle_ms=0)
        self._next_stale_check = 0.0
        self._ready = True

    # ---- one iteration --------------------------------------------------------

    def _iteration(self) -> bool:
        """One round of work; True when there was nothing to do."""
        if not self._ready:
            self._on_lead()
        stored = self._ingestor.drain() if self._ingestor is not None else 0
        closed = close_due_periods(self.store, self._rule, by_time=not self.distributed)
        if self.distributed:
            self._append_time_cut()
        if time.monotonic() >= self._next_stale_check:
            self._recover_stale_jobs()
            self._next_stale_check = time.monotonic() + self.settings.lock_ttl_seconds
        started = self._advance_training()
        if stored or closed or started:
            return False
        if self._ingestor is not None:  # idle: wait on the stream instead of sleeping
            self._ingestor.drain(block_ms=int(self.settings.worker_poll_seconds * 1000))
            return False
        return True

    def _close_by_count(self) -> None:
        if self._rule.kind == "count":
            close_due_periods(self.store, self._rule)

    def _append_time_cut(self) -> None:
        """Distributed time rule: a cut at the end of the open period's window,
        appended once per window (a repeat would be void anyway)."""
        period = time_cut_due(self.store, self._rule)
        if period is None:
            return
        key = (period.period_id, period.opened_at)
        if self._time_cut_sent == key:
            return
        entry = self.bus.append_cut(Cut(period_id=period.period_id))
        self._time_cut_sent = key
        log.info("period %d: its window ended; cut %s appended", period.period_id, entry)

    def _recover_stale_jobs(self) -> None:
        """Fail a running job whose worker died (error "interrupted") and queue a
        fresh job for its period, so the period is trained once, not stuck."""
        self._heartbeat.beat_job()
        ours = self._training.job.job_id if self._training is not None else None
        jobs.recover_stale(self.store, self.stale_after_s, ours)

    # ---- training -------------------------------------------------------------

    def _advance_training(self) -> bool:
        """Settle a finished boundary; start the next job when none runs. True
        when something happened."""
        training = self._training
        if training is not None:
            if training.thread.is_alive():
                return False
            self._training = None
            self._settle(training)
            return True
        if self._stopping.is_set():
            return False
        job = self.store.next_job()
        if job is None or not self.store.claim_job(job.job_id):
            return False
        self._start(job)
        return True

    def _start(self, job: JobInfo) -> None:
        self._heartbeat.job_id = job.job_id
        log.info("running job %s (%s, period %d)", job.job_id, job.kind, job.period_id)
        thread = threading.Thread(target=self._train, name="smlrec-training", daemon=True)
        self._training = _Training(job, thread)
        thread.start()

    def _train(self) -> None:
        training = self._training
        assert training is not None
        torch.set_num_threads(self.settings.train_threads)
        try:
            training.result = self._trainer.run(training.job.period_id)
        except BaseException as error:  # settled on the loop's thread
            training.error = error
            return
        try:
            prune(self.store, self.artifacts, self.settings.keep_versions,
                  self.settings.lineup)
        except (StoreUnavailable, OSError) as error:
            log.warning("retention skipped this time: %s", error)

    def _collect_lost(self) -> None:
        """A boundary that ran on when the lead was lost: hand its job over."""
        training = self._training
        if training is None or training.thread.is_alive():
            return
        self._training = None
        try:
            if training.error is None and training.result is not None:
                self._settle(training)
                return
            self._trainer.reset()
            jobs.hand_over(self.store, training.job)
        except StoreUnavailable:
            log.warning("could not settle job %s; it is retried once stale", training.job.job_id)

    def _settle(self, training: _Training) -> None:
        job, error = training.job, training.error
        self._heartbeat.job_id = None
        if error is None and training.result is not None:
            self.store.finish_job(job.job_id, "succeeded", model_version=training.result.version)
            log.info("job %s succeeded (version %s)", job.job_id, training.result.version)
            return
        self._trainer.reset()
        if isinstance(error, Abandoned):
            jobs.requeue(self.store, job)
            return
        if isinstance(error, LeadershipLost):
            jobs.hand_over(self.store, job)
            raise error
        if isinstance(error, StoreUnavailable | BusUnavailable):
            self.store.retry_later(job.job_id, str(error), time.time())  # not a failed try
            raise error
        jobs.record_failure(self.store, self.settings, job, error)
