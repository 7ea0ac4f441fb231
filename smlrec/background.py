"""The lifecycle every background thread of the service and the worker shares (start,
stop, join), and the loop most of them run on it (one step at a time, woken at once)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class StopLoop(Exception):
    """Raised by a step to end its loop (the thread returns; ``stop`` still joins it)."""


class BackgroundThread:
    """Runs :meth:`run` on one daemon thread named ``name``. :meth:`start` does nothing
    while that thread is alive; :meth:`stop` sets :attr:`stopping`, calls
    :meth:`_on_stop` (to wake whatever the thread waits on) and joins the thread for
    at most ``join_timeout_s`` (None: as long as it takes). A stopped thread can be
    started again. Subclasses with their own ways of starting a thread (a torch
    thread count, a priority) override :meth:`_spawn`."""

    def __init__(self, name: str, join_timeout_s: float | None = 10.0) -> None:
        self.name = name
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread started last (None before the first start and after a stop)."""
        return self._thread

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> threading.Thread:
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        self._on_start()
        self._thread = self._spawn(self.run)
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it: ``timeout`` seconds, or the class's
        ``join_timeout_s`` when None."""
        self._stop.set()
        self._on_stop()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._join_timeout_s if timeout is None else timeout)

    def run(self) -> None:
        """The thread's work; it should return soon after :attr:`stopping` is set."""
        raise NotImplementedError

    def _on_start(self) -> None:
        """Called by :meth:`start` before the thread starts."""

    def _on_stop(self) -> None:
        """Called by :meth:`stop` after :attr:`stopping` is set, before the join."""

    def _spawn(self, target: Callable[[], None]) -> threading.Thread:
        thread = threading.Thread(target=target, name=self.name, daemon=True)
        thread.start()
        return thread


class BackgroundLoop(BackgroundThread):
    """Runs :meth:`step` on the thread: first after ``first_wait`` seconds (None: once
    woken), then after whatever each step returns (None: once woken). :meth:`wake`
    runs the next step now; :meth:`stop` lets the step under way finish. A step that
    raises is logged and the loop goes on; :class:`StopLoop` ends it."""

    def __init__(self, name: str, first_wait: float | None, join_timeout_s: float = 10.0) -> None:
        super().__init__(name, join_timeout_s)
        self._first_wait = first_wait
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def step(self) -> float | None:
        """One round of the loop's work; the seconds to wait before the next one."""
        raise NotImplementedError

    def _on_start(self) -> None:
        self._wake.clear()

    def _on_stop(self) -> None:
        self._wake.set()

    def run(self) -> None:
        wait = self._first_wait
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                wait = self.step()
            except StopLoop:
                return
            except Exception:  # keep the thread alive whatever a step meets
                log.exception("%s: a step failed", self.name)
