"""Background threads with a torch thread count of their own."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch


def start_thread(run: Callable[[], None], name: str,
                 torch_threads: int | None = None) -> threading.Thread:
    """Start ``run`` on a daemon thread named ``name``, with ``torch_threads``
    torch threads (None: the count it inherits). Returns once the thread has its
    count. torch keeps the count per thread, but gives a thread that has not
    asked for it yet the last count set anywhere in the process; so the caller's
    count is set again afterwards, for the threads the caller starts next."""
    inherited = torch.get_num_threads()
    ready = threading.Event()

    def main() -> None:
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
            torch.get_num_threads()  # this thread's own count from now on
        ready.set()
        run()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    ready.wait(timeout=10.0)
    if torch_threads is not None:
        torch.set_num_threads(inherited)
    return thread
