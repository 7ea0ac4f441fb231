"""Retries, against a stand-in for the service (httpx's MockTransport): a 503 is
retried after its Retry-After, a lost connection only for a request that may be
sent twice, a 4xx never; and the policy's limits end the retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from smlrec.client import (
    AsyncClient,
    Client,
    Conflict,
    Ingested,
    Interaction,
    RetryPolicy,
    Unavailable,
)
from smlrec.client.calls import retry_after

Answer = Callable[[httpx.Request], httpx.Response]
ACCEPTED = {"accepted": 1, "duplicates": 0, "period_id": 0}


class Script:
    """Answers requests from a list in turn (an exception in it is raised: a lost
    connection), noting when each came."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers: Iterator[httpx.Response | Exception] = iter(answers)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        self.requests.append(request)
        answer = next(self.answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


def busy(seconds: str | None = "0") -> httpx.Response:
    headers = {"Retry-After": seconds} if seconds is not None else {}
    return httpx.Response(503, json={"detail": "the database is unavailable"}, headers=headers)


def lost() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def client_for(script: Script, **policy: float) -> Client:
    return Client("http://service", transport=httpx.MockTransport(script),
                  retry=RetryPolicy(**{"backoff_s": 0.0, **policy}))


def test_a_503_is_retried_after_its_retry_after_then_succeeds() -> None:
    script = Script(busy("0"), busy("1"), httpx.Response(202, json=ACCEPTED))
    with client_for(script) as client:
        assert client.add_interactions([Interaction("u1", "i1")]) == Ingested(1, 0, 0)
    assert len(script.times) == 3
    assert script.times[2] - script.times[1] >= 1.0  # it waited the second Retry-After
    assert all(r.content == script.requests[0].content for r in script.requests)


def test_a_503_past_the_attempts_or_the_time_allowed_is_unavailable() -> None:
    script = Script(busy(), busy(), busy())
    with client_for(script, attempts=3) as client, pytest.raises(Unavailable) as error:
        client.recommend("u1")
    assert (error.value.status, error.value.detail) == (503, "the database is unavailable")
    assert len(script.times) == 3

    script = Script(busy("3600"))  # longer than the policy waits in all: not waited for
    started = time.monotonic()
    with client_for(script, max_total_s=5) as client, pytest.raises(Unavailable):
        client.models()
    assert len(script.times) == 1 and time.monotonic() - started < 5


def test_a_4xx_is_never_retried() -> None:
    script = Script(httpx.Response(409, json={"detail": "the open period is empty"}))
    with client_for(script) as client, pytest.raises(Conflict) as error:
        client.retrain()
    assert (error.value.status, error.value.detail) == (409, "the open period is empty")
    assert len(script.times) == 1


def test_a_lost_connection_is_retried_only_where_a_repeat_is_harmless() -> None:
    script = Script(lost(), lost(), httpx.Response(200, json={"periods": []}))
    with client_for(script) as client:
        assert client.periods() == []
    assert len(script.times) == 3

    with_ids = [Interaction("u1", "i1", event_id="e-1"), {"user_id": "u2", "item_id": "i1",
                                                         "event_id": "e-2"}]
    script = Script(lost(), httpx.Response(202, json=ACCEPTED))
    with client_for(script) as client:
        assert client.add_interactions(with_ids).accepted == 1
    assert len(script.times) == 2

    script = Script(lost(), httpx.Response(202, json=ACCEPTED))
    with client_for(script) as client, pytest.raises(Unavailable) as error:
        client.add_interactions([*with_ids, Interaction("u3", "i1")])  # one row without an id
    assert error.value.status is None and isinstance(error.value.__cause__, httpx.ConnectError)
    assert len(script.times) == 1

    script = Script(lost(), httpx.Response(202, json={}))
    with client_for(script) as client, pytest.raises(Unavailable):
        client.retrain()
    assert len(script.times) == 1


def test_lost_connections_past_the_attempts_are_unavailable() -> None:
    script = Script(lost(), lost())
    with client_for(script, attempts=2) as client, pytest.raises(Unavailable, match="2 attempts"):
        client.job("j1")
    assert len(script.times) == 2


def test_the_async_client_retries_the_same_way() -> None:
    script = Script(busy("1"), lost(), httpx.Response(
        200, json={"user_id": "u1", "items": [{"item_id": "i2", "score": 1.5}],
                   "model_version": 3, "fallback": None}))
    no_id = Script(lost())
    refused = Script(httpx.Response(404, json={"detail": "unknown job 'j'"}))

    async def scenario() -> None:
        async with AsyncClient("http://service", transport=httpx.MockTransport(script),
                               retry=RetryPolicy(backoff_s=0.0)) as client:
            top = await client.recommend("u1")
            assert (top.items, top.model_version) == ((("i2", 1.5),), 3)
        async with AsyncClient("http://service", transport=httpx.MockTransport(no_id)) as client:
            with pytest.raises(Unavailable):
                await client.add_interactions([Interaction("u1", "i1")])
        async with AsyncClient("http://service",
                               transport=httpx.MockTransport(refused)) as client:
            with pytest.raises(Exception, match="unknown job"):
                await client.job("j")

    asyncio.run(scenario())
    assert len(script.times) == 3 and script.times[1] - script.times[0] >= 1.0
    assert len(no_id.times) == 1 and len(refused.times) == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def header(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}))

    assert header("2") == 2.0 and header("0.5") == 0.5 and header("-3") == 0.0
    assert header("soon") is None and retry_after(httpx.Response(503)) is None
    later = time.time() + 30
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert 25 <= (header(date) or 0) <= 31
    policy = RetryPolicy(attempts=3, max_total_s=10, backoff_s=1, max_backoff_s=1.5)
    assert [policy.delay(a, 0, None) for a in (1, 2, 3)] == [1, 1.5, None]
    assert policy.delay(1, 9.5, 1) is None and policy.delay(1, 0, 4) == 4
