"""The worker loop: lead (or wait), ingest, cut periods, run retrain jobs.

One iteration, as the leader:

1. (distributed mode) drain the interaction stream into the database;
2. apply the period rule: close complete periods and queue their retrain;
3. every few seconds, fail jobs whose worker died (heartbeat older than three
   lease TTLs) and queue a fresh job for their period, run next;
4. claim the oldest queued job and run the period boundary (``worker.boundary``).

A database or Redis outage pauses the loop with bounded exponential backoff
(0.5 s doubling up to 30 s) and it resumes where it stopped: a job interrupted
by an outage is run again, and every step of the boundary is safe to repeat.
``stop`` is honoured between steps (a warm stop): a boundary under way finishes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import torch

from smlrec.settings import Settings
from store import ArtifactStore, Bus, BusUnavailable, JobInfo, Store, StoreUnavailable
from worker.boundary import LeadershipLost, PeriodTrainer
from worker.ingest import StreamIngestor
from worker.leader import Heartbeat
from worker.periods import close_due_periods

log = logging.getLogger(__name__)

LOCK_NAME = "worker"
STALE_TTLS = 3.0  # a running job is stale once its heartbeat is this many lease TTLs old
MAX_BACKOFF_S = 30.0


def backoff_seconds(failures: int) -> float:
    """Pause after the ``failures``-th consecutive outage: 0.5 s doubling, at most 30 s."""
    return float(min(MAX_BACKOFF_S, 0.5 * 2 ** max(failures - 1, 0)))


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = bus.leader_lock(LOCK_NAME, settings.lock_ttl_seconds)
        self._heartbeat = Heartbeat(self._lock, store, settings.lock_ttl_seconds / 3)
        self._trainer = PeriodTrainer(settings, store, bus, artifacts, self._check_leader)
        self._ingestor = StreamIngestor(store, bus, consumer_name()) if self.distributed else None
        self._leading = False
        self._ready = False  # state restored since taking the lead
        self._job: JobInfo | None = None  # claimed and not finished
        self._next_job: JobInfo | None = None  # re-queued after a stale one: runs first
        self._next_stale_check = 0.0
        self._stopping = self._stop  # the event run() was given: no new job once it is set

    # ---- lifecycle ------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    def start_thread(self) -> threading.Thread:
        """Run :meth:`run` on a background thread (embedded mode)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name="smlrec-worker", daemon=True
        )
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop after its current step and wait up to ``timeout`` s."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; always gives the lease up on the way out."""
        torch.set_num_threads(self.settings.train_threads)
        self._stopping = stop
        failures = 0
        log.info(
            "worker started (%s mode, period rule %s, strategy %s)",
            "distributed" if self.distributed else "embedded",
            self.settings.period,
            self.settings.strategy,
        )
        try:
            while not stop.is_set():
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
                    stop.wait(delay)
                    continue
                except Exception:
                    failures += 1
                    delay = backoff_seconds(failures)
                    log.exception("unexpected error in the worker loop; retrying in %.1f s", delay)
                    stop.wait(delay)
                    continue
                if self._heartbeat.lost.is_set():
                    self._step_down()
                elif idle:
                    stop.wait(self.settings.worker_poll_seconds)
        finally:
            self._step_down()
            log.info("worker stopped")

    # ---- leadership -----------------------------------------------------------

    def _take_lead(self) -> bool:
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
        self._job = self._next_job = None
        log.info("this worker gave up the lead")

    def _check_leader(self) -> None:
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
        closed = close_due_periods(self.store, self.settings.period_rule)
        if time.monotonic() >= self._next_stale_check:
            self._recover_stale_jobs()
            self._next_stale_check = time.monotonic() + self.settings.lock_ttl_seconds
        job = self._job or (None if self._stopping.is_set() else self._claim_next())
        if job is not None:
            self._run_job(job)
            return False
        if stored or closed:
            return False
        if self._ingestor is not None:  # idle: wait on the stream instead of sleeping
            self._ingestor.drain(block_ms=int(self.settings.worker_poll_seconds * 1000))
            return False
        return True

    def _recover_stale_jobs(self) -> None:
        """Fail a running job whose worker died (error "interrupted") and queue a
        fresh job for its period, so the period is trained once, not stuck."""
        self._heartbeat.beat_job()
        while True:
            job = self.store.running_or_queued_job()
            if job is None or job.status != "running":
                return
            if self._job is not None and job.job_id == self._job.job_id:
                return
            last = job.heartbeat_at or job.started_at or job.created_at
            if time.time() - last <= self.stale_after_s:
                return  # its worker may still be finishing: wait
            if not self.store.fail_stale_jobs(self.stale_after_s):
                return
            if job.kind != "retrain":
                log.warning("%s job %s was interrupted", job.kind, job.job_id)
                continue
            self._next_job = self.store.create_job(job.period_id, job.kind)
            log.warning(
                "job %s (period %d) was interrupted; queued job %s",
                job.job_id,
                job.period_id,
                self._next_job.job_id,
            )

    def _claim_next(self) -> JobInfo | None:
        job = self._next_job
        self._next_job = None
        if job is None:
            job = self.store.running_or_queued_job()
            if job is None or job.status != "queued":
                return None  # idle, or another worker's job not stale yet
        if not self.store.claim_job(job.job_id):
            return None
        self._job = job
        return job

    def _run_job(self, job: JobInfo) -> None:
        self._heartbeat.job_id = job.job_id
        log.info("running job %s (%s, period %d)", job.job_id, job.kind, job.period_id)
        try:
            if job.kind != "retrain":
                raise ValueError(f"the worker runs retrain jobs, not {job.kind!r} jobs")
            result = self._trainer.run(job.period_id)
        except (StoreUnavailable, BusUnavailable):
            self._trainer.reset()  # the job stays claimed: retried after the backoff
            raise
        except LeadershipLost:
            self._trainer.reset()
            self._hand_over(job)
            raise
        except Exception as error:
            log.exception("job %s failed", job.job_id)
            self._trainer.reset()
            self._finish(job, "failed", error=f"{type(error).__name__}: {error}")
            return
        self._finish(job, "succeeded", version=result.version)

    def _hand_over(self, job: JobInfo) -> None:
        """Leadership was lost mid-job: fail the job and queue its period again for
        whoever leads next (if the database answers; else the job goes stale)."""
        try:
            self._finish(job, "failed", error="interrupted: the worker lost its lease")
            queued = self.store.create_job(job.period_id, job.kind)
            log.warning(
                "queued job %s for period %d for the next leader", queued.job_id, job.period_id
            )
        except StoreUnavailable:
            log.warning("could not hand job %s over; it is failed once stale", job.job_id)

    def _finish(
        self, job: JobInfo, status: str, version: int | None = None, error: str | None = None
    ) -> None:
        if status == "succeeded":
            self.store.finish_job(job.job_id, "succeeded", model_version=version)
        else:
            self.store.finish_job(job.job_id, "failed", error=error)
        self._heartbeat.job_id = None
        self._job = None
        log.info("job %s %s (version %s)", job.job_id, status, version)
