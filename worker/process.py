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
the service, within seconds: a boundary under way is abandoned and its job
queued again (every step of a boundary is safe to repeat). The parent talks to
the child through a pipe whose only writer it holds: a stop is a byte on it,
and the parent's death (kill -9) closes it, which the child sees at once; it
then stops, and leaves within :data:`ORPHAN_GRACE_S` whatever it was doing, so
no orphan keeps leading. (A multiprocessing Event is shared state a child
killed mid-wait can leave inconsistent: its ``set`` waits for every sleeper to
acknowledge the wake-up, a dead one included. A pipe's end closes with its
process.)
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time

from smlrec.background import BackgroundThread
from smlrec.logs import configure_logging
from smlrec.settings import Settings

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 3.0  # a child whose parent died leaves within this, whatever it does
POLL_S = 0.5  # how often the parent's supervisor looks at its child
STOP_GRACE_S = 3.0  # a stopping child gets this long before it is terminated
SUPERVISOR_JOIN_S = 2.0  # then the supervising thread, which polls every POLL_S
MAX_RESTART_DELAY_S = 30.0

_spawn = multiprocessing.get_context("spawn")  # no fork of a threaded process


class WorkerProcess(BackgroundThread):
    """Runs the worker in a child process, restarted if it dies, until :meth:`stop`.

    Same lifecycle as :class:`worker.runner.Worker`: ``start`` then ``stop``. The
    supervising thread is named ``smlrec-worker``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("smlrec-worker", join_timeout_s=SUPERVISOR_JOIN_S)
        self.settings = settings
        self._process: multiprocessing.process.BaseProcess | None = None
        self._to_child: multiprocessing.connection.Connection | None = None
        self._mutex = threading.Lock()

    def stop(self, timeout: float | None = None, abandon: bool = True) -> None:
        """Ask the child to stop now (a boundary under way is abandoned and its
        job queued again: ``abandon`` is always so here); after ``timeout`` s
        (default :data:`STOP_GRACE_S`), end it."""
        timeout = STOP_GRACE_S if timeout is None else min(timeout, STOP_GRACE_S)
        self._stop.set()
        with self._mutex:
            process, pipe = self._process, self._to_child
            self._to_child = None
        if pipe is not None:
            _tell_stop(pipe)
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                log.warning("the worker process did not stop in %s s; terminating it", timeout)
                process.terminate()
                process.join(1.0)
                if process.is_alive():
                    process.kill()
                    process.join(1.0)
        super().stop()  # the supervisor, which returns once it sees the child gone

    def run(self) -> None:
        """The supervisor: start the child, and again whenever it dies."""
        delay = 1.0
        while not self._stop.is_set():
            from_parent, to_child = _spawn.Pipe(duplex=False)
            process = _spawn.Process(
                target=child_main,
                args=(self.settings, from_parent),
                name="smlrec-worker",
                daemon=True,
            )
            started = time.monotonic()
            with self._mutex:
                if self._stop.is_set():
                    to_child.close()
                    from_parent.close()
                    return
                process.start()
                self._process, self._to_child = process, to_child
            from_parent.close()  # the child has its own copy; ours would hide nothing
            log.info("worker process %d started", process.pid)
            while process.is_alive() and not self._stop.is_set():
                process.join(POLL_S)
            if self._stop.is_set():
                return
            with self._mutex:
                self._to_child = None
            to_child.close()
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


def _tell_stop(pipe: multiprocessing.connection.Connection) -> None:
    try:
        pipe.send_bytes(b"stop")
    except OSError:  # the child is gone already
        pass
    finally:
        pipe.close()


def child_main(settings: Settings, from_parent: multiprocessing.connection.Connection) -> None:
    """The child's entry point: the worker loop until the parent says stop or dies."""
    # Ctrl-C in a terminal reaches the whole process group: the parent handles it
    # and stops the child through the pipe. SIGTERM on its own: warm stop.
    stop = threading.Event()
    abandon = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    watcher = threading.Thread(
        target=_watch, args=(from_parent, stop, abandon), name="smlrec-parent-watch", daemon=True
    )
    watcher.start()

    from store import ArtifactStore, Store, make_bus
    from worker.runner import Worker

    store = Store.from_url(settings.database_url)
    bus = make_bus(settings)
    try:
        Worker(settings, store, bus, ArtifactStore(settings.model_dir)).work(stop, abandon)
    finally:
        bus.close()
        store.close()


def _watch(
    from_parent: multiprocessing.connection.Connection,
    stop: threading.Event,
    abandon: threading.Event,
) -> None:
    """Stop (abandoning a boundary under way) when the parent asks or is gone;
    leave at once if the parent is gone and stopping takes longer than
    :data:`ORPHAN_GRACE_S`."""
    try:
        from_parent.recv_bytes()
        gone = False
    except (EOFError, OSError):
        gone = True
    abandon.set()
    stop.set()
    if gone:
        log.warning("the service process is gone; the worker stops")
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)
