"""A thread that runs one step at a time until it is stopped: the lifecycle that the
background loops of the service and the worker share (start, wake, stop and join)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class StopLoop(Exception):
    """Raised by a step to end its loop (the thread returns; ``stop`` still joins it)."""


class BackgroundLoop:
    """Runs :meth:`step` on a daemon thread named ``name``: first after ``first_wait``
    seconds (None: once woken), then after whatever each step returns (None: once
    woken). :meth:`wake` runs the next step now; :meth:`stop` lets the step under way
    finish and joins the thread for at most ``join_timeout_s``. A step that raises
    is logged and the loop goes on; :class:`StopLoop` ends it. A stopped loop can be
    started again."""

    def __init__(self, name: str, first_wait: float | None, join_timeout_s: float = 10.0) -> None:
        self.name = name
        self._first_wait = first_wait
        self._join_timeout_s = join_timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._join_timeout_s)

    def step(self) -> float | None:
        """One round of the loop's work; the seconds to wait before the next one."""
        raise NotImplementedError

    def _run(self) -> None:
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
