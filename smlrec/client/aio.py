"""The asynchronous client: :class:`AsyncClient`, the methods of
:class:`smlrec.client.Client` as coroutines (on asyncio or trio, through anyio).

    async with AsyncClient("http://127.0.0.1:8000", api_key="k") as client:
        await client.add_interactions([Interaction("u42", "i7", event_id="e-1")])
        recommendation = await client.recommend("u42", k=10)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import httpx

from smlrec.client import calls
from smlrec.client import models as m
from smlrec.client.calls import Attempts, Call, RetryPolicy
from smlrec.client.errors import Unavailable, WaitTimeout

T = TypeVar("T")
Row = m.Interaction | Mapping[str, Any]


class AsyncClient:
    """The service's HTTP API over one connection pool (``aclose`` it, or use
    ``async with``).

    ``api_key`` goes with the client endpoints (``X-API-Key``), ``admin_token`` with
    the admin ones (``Authorization: Bearer``); either may be left out where the
    service asks for none. ``retry`` says how long a 503 (the service applied
    nothing) or, for idempotent requests, a lost connection is retried; a 4xx never
    is. Failures raise :class:`smlrec.client.SmlrecError` subclasses. ``transport``
    replaces httpx's (a test's, a proxy's)."""

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 admin_token: str | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.api_key = api_key
        self.admin_token = admin_token
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- sending ----------------------------------------------------------------

    async def _send(self, call: Call[Any], stream: bool = False) -> httpx.Response:
        """The call's answer after the retries its policy allows; raises the error a
        status of 400 or above stands for (unless the call reads it)."""
        tries = Attempts(self.retry, call)
        while True:
            tries.attempt += 1
            request = self._http.build_request(
                call.method, call.path, params=call.params, json=call.body,
                headers=calls.headers(call.auth, self.api_key, self.admin_token))
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                await anyio.sleep(tries.after_error(error))
                continue
            wait = tries.after_response(response)
            if wait is None:
                break
            await response.aclose()
            await anyio.sleep(wait)
        if calls.failed(response, call):
            await response.aread()
            await response.aclose()
            calls.raise_for(response)
        return response

    async def _call(self, call: Call[T]) -> T:
        return call.parse(await self._send(call))

    # ---- client endpoints -------------------------------------------------------

    async def add_interactions(
            self, rows: Iterable[Row], batch_size: int = calls.MAX_INTERACTIONS) -> m.Ingested:
        """Post any number of interactions (typed rows or dicts), ``batch_size`` (at
        most 10,000) per request, in order; the totals over every request.

        A request is retried on 503 (the service stored nothing of it), and on a lost
        connection only when every row in it carries an ``event_id``: the service
        counts a repeated event id once, so sending such a request twice cannot
        store a row twice. Without event ids a lost connection raises
        :class:`Unavailable` and the request's outcome is unknown. Requests before
        a failing one stay stored."""
        if not 1 <= batch_size <= calls.MAX_INTERACTIONS:
            raise ValueError(f"batch_size must be 1 to {calls.MAX_INTERACTIONS}")
        total = m.Ingested(0, 0, None)
        for chunk in calls.chunks(rows, batch_size):
            total += await self._call(calls.post_interactions(chunk))
        return total

    async def recommend(self, user_id: str, k: int = 20, exclude_seen: bool = True,
                        category: str | None = None) -> m.Recommendation:
        """A user's top ``k`` items (``category``: only items of it, where the
        service supports it)."""
        return await self._call(calls.recommend(user_id, k, exclude_seen, category))

    async def recommend_many(self, user_ids: Sequence[str], k: int = 20,
                             exclude_seen: bool = True,
                             category: str | None = None) -> list[m.Recommendation]:
        """One recommendation per user id, in order, through the batch endpoint (1,000
        ids per request)."""
        results: list[m.Recommendation] = []
        for chunk in calls.chunks(user_ids, calls.MAX_BATCH_USERS):
            call = calls.recommend_batch(chunk, k, exclude_seen, category)
            batch = await self._call(call)
            results.extend(batch)
        return results

    async def similar_items(self, item_id: str, k: int = 20) -> m.SimilarItems:
        """The ``k`` items most like ``item_id`` in the served model."""
        return await self._call(calls.similar_items(item_id, k))

    # ---- admin endpoints --------------------------------------------------------

    async def retrain(self) -> m.QueuedJob:
        """Close the open period now and queue its retrain (409 :class:`Conflict`: a
        retrain is running, or the period is empty)."""
        return await self._call(calls.retrain())

    async def retry_period(self, period_id: int) -> m.QueuedJob:
        """Queue again the retrain of a period whose retrain failed."""
        return await self._call(calls.retry_period(period_id))

    async def job(self, job_id: str) -> m.Job:
        return await self._call(calls.job(job_id))

    async def wait_job(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> m.Job:
        """The job once it has succeeded or failed (check ``status``); raises
        :class:`WaitTimeout` when it has not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job.finished:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s",
                                  detail=job.status)
            await anyio.sleep(min(poll_s, left))

    async def models(self) -> list[m.ModelVersion]:
        """Every model version, newest first."""
        return await self._call(calls.models())

    async def activate(self, version: int) -> m.ModelVersion:
        """Serve this version now, on every replica (a rollback)."""
        return await self._call(calls.activate(version))

    async def pin(self, version: int) -> m.ModelVersion:
        """Keep this version whatever the retention says."""
        return await self._call(calls.pin(version, True))

    async def unpin(self, version: int) -> m.ModelVersion:
        return await self._call(calls.pin(version, False))

    async def periods(self) -> list[m.Period]:
        """Every period, oldest first (the open one last)."""
        return await self._call(calls.periods())

    async def strategies(self, periods: int | None = None) -> m.StrategyOverview:
        """The served strategy, the challengers, and their scores (``periods``: how
        many of the newest evaluated periods)."""
        return await self._call(calls.strategies(periods))

    async def choose_strategy(self, name: str) -> m.StrategyOverview:
        """Serve this strategy's newest model now and from now on."""
        return await self._call(calls.choose_strategy(name))

    async def set_item(self, item_id: str, categories: Sequence[str] = (),
                 hidden: bool = False) -> m.ItemInfo:
        """Store an item's categories and whether it is hidden, replacing what it had
        (an item no interaction named yet may be described first)."""
        return await self._call(calls.set_item(item_id, categories, hidden))

    async def item(self, item_id: str) -> m.ItemInfo:
        """An item's metadata (404 :class:`NotFound`: neither described nor seen)."""
        return await self._call(calls.item(item_id))

    async def delete_user(self, user_id: str) -> m.UserDeleted:
        """Delete a user's data (404 :class:`NotFound`: a user never seen)."""
        return await self._call(calls.delete_user(user_id))

    async def export_interactions(
            self, since: float | None = None) -> AsyncIterator[m.StoredInteraction]:
        """Every stored interaction (stamped at or after ``since``, Unix seconds),
        oldest first, read from the stream as it comes. The request is sent when
        iteration starts; ``aclose`` the iterator to stop early. A stream cut short
        raises :class:`Unavailable` (it is not retried: rows already read would come
        again)."""
        response = await self._send(calls.export_interactions(since), stream=True)
        try:
            async for line in response.aiter_lines():
                row = calls.export_line(line)
                if row is not None:
                    yield row
        except httpx.TransportError as error:
            raise Unavailable(f"the interaction export was cut short: {error!r}") from error
        finally:
            await response.aclose()

    # ---- operations -------------------------------------------------------------

    async def health(self) -> bool:
        """True while the service's process answers (raises otherwise)."""
        return await self._call(calls.health())

    async def ready(self) -> m.Readiness:
        """Whether the service's database (and Redis) answer; not ready is an answer."""
        return await self._call(calls.ready())

    async def prometheus_metrics(self) -> str:
        """The service's metrics in Prometheus' text format."""
        return await self._call(calls.prometheus_metrics())
