"""Fixtures of the client library's tests: the real app served by uvicorn on a free
port in embedded mode (its own SQLite file), and transports that count what the
client sends."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from smlrec.app import create_app
from smlrec.settings import Settings

ADMIN_TOKEN = "admin-secret"
API_KEY = "client-key"


def make_settings(sqlite_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": sqlite_url,
        "redis_url": None,
        "model_dir": tmp_path / "models",
        "period": "manual",
        "embed_dim": 8,
        "worker_poll_seconds": 0.05,
        "swap_poll_seconds": 0.1,
        "admin_token": ADMIN_TOKEN,
        "api_key": None,
        "retrain_attempts": 1,
    }
    values.update(overrides)
    return Settings(**values)


def wait_for(condition: Callable[[], Any], timeout: float = 600.0) -> Any:
    """Poll ``condition`` until it holds (its value), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"not within {timeout} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(settings: Settings, run_worker: bool = False) -> Iterator[str]:
    """The app (its lifespan running) on a free port in this process: its base URL."""
    for _ in range(3):  # the free port may be taken by someone else before we bind it
        server = uvicorn.Server(uvicorn.Config(
            create_app(settings, run_worker=run_worker), host="127.0.0.1",
            port=_free_port(), log_config=None))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started or not thread.is_alive())  # noqa: B023
        if server.started:
            break
    else:
        pytest.fail("the server did not start")
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    """Embedded mode, manual periods, admin token "admin-secret", no client key."""
    return make_settings(sqlite_url, tmp_path)


@pytest.fixture
def url(settings: Settings) -> Iterator[str]:
    """The app without its worker (nothing trains)."""
    with serve(settings) as base_url:
        yield base_url


class Counting(httpx.BaseTransport):
    """httpx's own transport, keeping each request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncCounting(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def paths(sent: list[httpx.Request]) -> list[tuple[str, str]]:
    return [(request.method, request.url.path) for request in sent]
