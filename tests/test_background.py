"""The lifecycle every service and worker thread shares (one thread per start, a hook
that wakes it on stop, a join, a restart) and the loop most of them run: steps on its
own thread, woken at once, waiting what each step asks, surviving a failing step,
ended by its step or by stop, and started again. Waits are on events with generous
bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from smlrec.background import BackgroundLoop, BackgroundThread, StopLoop

BOUND_S = 60.0  # a slow machine is slower, never red


class Recording(BackgroundLoop):
    def __init__(self, first_wait: float | None, waits: list[float | None]) -> None:
        super().__init__("test-loop", first_wait)
        self.waits = waits  # what each step returns, then None
        self.steps: list[str] = []
        self.stepped = threading.Event()
        self.fail_next = False
        self.end_next = False

    def step(self) -> float | None:
        self.steps.append(threading.current_thread().name)
        self.stepped.set()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("this step fails")
        if self.end_next:
            raise StopLoop
        return self.waits.pop(0) if self.waits else None


def _next_step(loop: Recording) -> None:
    assert loop.stepped.wait(BOUND_S)
    loop.stepped.clear()


def test_a_loop_waits_until_woken_and_steps_on_its_own_thread() -> None:
    loop = Recording(first_wait=None, waits=[])
    loop.start()
    try:
        assert not loop.stepped.wait(0.2)  # nothing asks it to step yet
        loop.wake()
        _next_step(loop)
        assert loop.steps == ["test-loop"]
    finally:
        loop.stop()


def test_a_step_that_fails_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Recording(first_wait=None, waits=[])
    loop.fail_next = True
    loop.start()
    try:
        loop.wake()
        _next_step(loop)
        loop.wake()
        _next_step(loop)
        assert len(loop.steps) == 2
    finally:
        loop.stop()
    assert any("test-loop: a step failed" in r.getMessage() for r in caplog.records)


def test_the_wait_a_step_returns_comes_before_the_next_step() -> None:
    loop = Recording(first_wait=0.0, waits=[0.0, 0.0, None])
    loop.start()
    try:
        # the first wait and two returned ones pass by themselves
        deadline = time.monotonic() + BOUND_S
        while len(loop.steps) < 3 and time.monotonic() < deadline:
            loop.stepped.wait(0.05)
        assert len(loop.steps) == 3
        loop.stepped.clear()
        assert not loop.stepped.wait(0.2)  # the third step asked to wait for a wake
        assert len(loop.steps) == 3
    finally:
        loop.stop()


def test_stop_joins_the_thread_and_a_stopped_loop_starts_again() -> None:
    loop = Recording(first_wait=None, waits=[])
    loop.start()
    thread = loop.thread
    assert thread is not None and thread.is_alive()
    loop.stop()
    assert not thread.is_alive()
    loop.wake()
    assert not loop.stepped.wait(0.2)  # stopped: no step
    loop.start()
    try:
        loop.wake()
        _next_step(loop)
        assert loop.steps == ["test-loop"]
    finally:
        loop.stop()


def test_stop_loop_from_a_step_ends_the_thread() -> None:
    loop = Recording(first_wait=None, waits=[])
    loop.end_next = True
    loop.start()
    thread = loop.thread
    assert thread is not None
    loop.wake()
    thread.join(BOUND_S)
    assert not thread.is_alive() and loop.steps == ["test-loop"]
    loop.stop()  # still fine after the loop ended by itself


class Waiting(BackgroundThread):
    """A thread that waits on a condition of its own until stop wakes it."""

    def __init__(self) -> None:
        super().__init__("test-thread", join_timeout_s=BOUND_S)
        self.cond = threading.Condition()
        self.running = threading.Event()
        self.spawned: list[str] = []
        self.woken = False

    def _spawn(self, target: Callable[[], None]) -> threading.Thread:
        self.spawned.append(self.name)
        return super()._spawn(target)

    def _on_stop(self) -> None:
        with self.cond:
            self.woken = True
            self.cond.notify_all()

    def run(self) -> None:
        self.running.set()
        with self.cond:
            while not self.stopping:
                self.cond.wait()


def test_a_thread_starts_once_while_alive_and_stop_wakes_and_joins_it() -> None:
    waiting = Waiting()
    thread = waiting.start()
    try:
        assert waiting.running.wait(BOUND_S)
        assert thread.name == "test-thread" and thread.daemon
        assert waiting.start() is thread and waiting.spawned == ["test-thread"]
        assert waiting.thread is thread and waiting.is_alive()
    finally:
        waiting.stop()
    assert waiting.woken and not thread.is_alive()  # the hook woke it; stop joined it
    assert waiting.thread is None and not waiting.is_alive() and waiting.stopping
    again = waiting.start()
    try:
        assert again is not thread and again.is_alive() and not waiting.stopping
        assert waiting.spawned == ["test-thread", "test-thread"]
    finally:
        waiting.stop()


def test_stop_waits_no_longer_than_its_timeout() -> None:
    class Stuck(BackgroundThread):
        def __init__(self) -> None:
            super().__init__("test-stuck", join_timeout_s=BOUND_S)
            self.release = threading.Event()

        def run(self) -> None:
            self.release.wait(BOUND_S)  # ignores stop until released

    stuck = Stuck()
    thread = stuck.start()
    stuck.stop(timeout=0.01)  # returns with the thread still running
    assert thread.is_alive()
    stuck.release.set()
    thread.join(BOUND_S)
    assert not thread.is_alive()
