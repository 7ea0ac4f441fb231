"""The embedded worker in a child process of the API.

Training is Python loops around small tensor operations: on a thread of the API
process it holds the GIL for most of a retrain, and every request waits behind
it (recommendations p99 rose some 80-fold, past a second, while a 100,000 x
100,000 model retrained). In its own process the worker competes for a core
only, and at a lower scheduling priority (``SMLREC_WORKER_NICE``) it yields that
core to serving while requests wait.

The child talks to the API through the store alone: the API writes interactions
and jobs to the (SQLite) database, the child trains and records versions there,
and the API's version sync installs them (the bus of embedded mode lives in one
process, so announcements do not cross; the sync polls every
``SMLREC_SWAP_POLL_SECONDS``).

The parent restarts a child that died (with bounded backoff) and stops it with
the service. A child whose parent died (kill -9) stops within
:data:`ORPHAN_GRACE_S`: an interrupted boundary is safe to repeat, and its job is
retrained by the next worker once stale, so no two workers lead at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import threading
import time

from smlrec.settings import Settings

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 5.0  # a warm stop gets this long after the parent died
POLL_S = 0.5  # how often the child checks its parent and the stop event
MAX_RESTART_DELAY_S = 30.0

_spawn = multiprocessing.get_context("spawn")  # no fork of a threaded process


class WorkerProcess:
    """Runs the worker in a child process, restarted if it dies, until :meth:`stop`.

    Same lifecycle as :class:`worker.runner.Worker`'s thread: ``start_thread``
    then ``stop``. The supervising thread is named ``smlrec-worker``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._child_stop = _spawn.Event()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._thread: threading.Thread | None = None

    def start_thread(self) -> threading.Thread:
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._child_stop.clear()
        self._thread = threading.Thread(target=self._supervise, name="smlrec-worker", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Ask the child to stop after its current step; after ``timeout`` s, end it."""
        self._stop.set()
        self._child_stop.set()
        process = self._process
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                log.warning("the worker process did not stop in %s s; terminating it", timeout)
                process.terminate()
                process.join(5.0)
                if process.is_alive():
                    process.kill()
                    process.join(5.0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10.0)
            self._thread = None

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            process = _spawn.Process(
                target=child_main,
                args=(self.settings, self._child_stop, os.getpid()),
                name="smlrec-worker",
                daemon=True,
            )
            started = time.monotonic()
            process.start()
            self._process = process
            log.info("worker process %d started", process.pid)
            process.join()
            if self._stop.is_set():
                return
            if time.monotonic() - started > 10 * MAX_RESTART_DELAY_S:
                delay = 1.0  # it ran a good while: a fresh failure, not a crash loop
            log.error(
                "worker process %d exited with code %s; restarting in %.0f s",
                process.pid,
                process.exitcode,
                delay,
            )
            if self._stop.wait(delay):
                return
            delay = min(MAX_RESTART_DELAY_S, delay * 2)


def child_main(
    settings: Settings, parent_stop: multiprocessing.synchronize.Event, parent_pid: int
) -> None:
    """The child's entry point: the worker loop until the parent says stop or dies."""
    from smlrec.cli import configure_logging  # the child configures its own logging

    # Ctrl-C in a terminal reaches the whole process group: the parent handles it
    # and stops the child through ``parent_stop``. SIGTERM on its own: warm stop.
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    configure_logging(settings.log_level)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    watcher = threading.Thread(
        target=_watch, args=(parent_stop, parent_pid, stop), name="smlrec-parent-watch", daemon=True
    )
    watcher.start()

    from store import ArtifactStore, Store, make_bus
    from worker.runner import Worker

    store = Store.from_url(settings.database_url)
    bus = make_bus(settings)
    try:
        Worker(settings, store, bus, ArtifactStore(settings.model_dir)).run(stop)
    finally:
        bus.close()
        store.close()


def _watch(
    parent_stop: multiprocessing.synchronize.Event, parent_pid: int, stop: threading.Event
) -> None:
    """Set ``stop`` when the parent asks or is gone; leave at once if the parent
    is gone and the warm stop takes longer than :data:`ORPHAN_GRACE_S`."""
    while not stop.is_set():
        if parent_stop.wait(POLL_S):
            stop.set()
            return
        if os.getppid() != parent_pid:
            log.warning("the service process %d is gone; the worker stops", parent_pid)
            stop.set()
            time.sleep(ORPHAN_GRACE_S)
            os._exit(1)
