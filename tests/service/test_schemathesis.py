"""Property-based checks against ``/openapi.json`` (schemathesis): every endpoint,
with the admin token and the client key, valid and invalid input; no answer is a
5xx and every answer matches the documented status codes, content types and
schemas. Bounded: a few dozen examples per endpoint, seconds in all."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_testkit import ModelWriter, interactions, make_settings

from smlrec.app import create_app
from store import Store
from store.migrate import upgrade

API_KEY = "client-key"
HEADERS = {"Authorization": "Bearer t", "X-API-Key": API_KEY}
EXAMPLES_PER_OPERATION = 25
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service on a loopback port (lifespan running, worker off), with some
    interactions and an active model so every route has something to serve."""
    folder = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{folder / 'smlrec.db'}"
    upgrade(url)
    settings_ = make_settings(Path(folder), url, api_key=API_KEY)
    server = uvicorn.Server(uvicorn.Config(
        create_app(settings_, run_worker=False), host="127.0.0.1", port=_free_port(),
        log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.config.port}"
    pairs = [(f"u{n % 7}", f"i{n % 11}") for n in range(40)]
    assert httpx.post(f"{base}/v1/interactions", json=interactions(*pairs),
                      headers=HEADERS).status_code == 202
    store = Store.from_url(url)
    try:
        ModelWriter(store, settings_.model_dir).write(dim=4, popular=["i1", "i2"])
    finally:
        store.close()
    yield base
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _run(operation: Any, mode: GenerationMode, live_url: str, calls: dict[str, int],
         failures: list[str]) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests to one endpoint; the first
    failure (after Hypothesis has shrunk it) goes into ``failures``."""
    label = operation.label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        response = case.call(base_url=live_url, headers=HEADERS, timeout=30)
        calls[label] = calls.get(label, 0) + 1
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        calls.setdefault(label, 0)  # no input at all, so no invalid input to send
    except Exception as error:  # every endpoint runs; all failures are reported
        failures.append(f"{label}: {error}"[:3000])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_every_endpoint_answers_as_documented(
    api_schema: Any, live_url: str, mode: GenerationMode
) -> None:
    operations = _operations(api_schema)
    assert len(operations) >= 11  # every endpoint of API.md is described
    failures: list[str] = []
    calls: dict[str, int] = {}
    for operation in operations:
        _run(operation, mode, live_url, calls, failures)
    assert not failures, "\n\n".join(failures)
    assert len(calls) == len(operations), calls  # every endpoint was exercised
    print(f"{mode.value}: {sum(calls.values())} requests", calls)
