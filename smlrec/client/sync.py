"""The blocking client: :class:`Client`, one method per endpoint of the API.

    with Client("http://127.0.0.1:8000", api_key="k") as client:
        client.add_interactions([Interaction("u42", "i7", event_id="e-1")])
        for item_id, score in client.recommend("u42", k=10).items:
            ...
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from smlrec.client import calls
from smlrec.client import models as m
from smlrec.client.calls import Attempts, Call, RetryPolicy
from smlrec.client.errors import Unavailable, WaitTimeout

T = TypeVar("T")
Row = m.Interaction | Mapping[str, Any]


class Client:
    """The service's HTTP API over one connection pool (close it, or use ``with``).

    ``api_key`` goes with the client endpoints (``X-API-Key``), ``admin_token`` with
    the admin ones (``Authorization: Bearer``); either may be left out where the
    service asks for none. ``retry`` says how long a 503 (the service applied
    nothing) or, for idempotent requests, a lost connection is retried; a 4xx never
    is. Failures raise :class:`smlrec.client.SmlrecError` subclasses. ``transport``
    replaces httpx's (a test's, a proxy's)."""

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 admin_token: str | None = None, timeout: float = 30.0,
                 retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.api_key = api_key
        self.admin_token = admin_token
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending ----------------------------------------------------------------

    def _send(self, call: Call[Any], stream: bool = False) -> httpx.Response:
        """The call's answer after the retries its policy allows; raises the error a
        status of 400 or above stands for (unless the call reads it)."""
        tries = Attempts(self.retry, call)
        while True:
            tries.attempt += 1
            request = self._http.build_request(
                call.method, call.path, params=call.params, json=call.body,
                headers=calls.headers(call.auth, self.api_key, self.admin_token))
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                time.sleep(tries.after_error(error))
                continue
            wait = tries.after_response(response)
            if wait is None:
                break
            response.close()
            time.sleep(wait)
        if calls.failed(response, call):
            response.read()
            response.close()
            calls.raise_for(response)
        return response

    def _call(self, call: Call[T]) -> T:
        return call.parse(self._send(call))

    # ---- client endpoints -------------------------------------------------------

    def add_interactions(self, rows: Iterable[Row], batch_size: int = calls.MAX_INTERACTIONS
                         ) -> m.Ingested:
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
            total += self._call(calls.post_interactions(chunk))
        return total

    def recommend(self, user_id: str, k: int = 20, exclude_seen: bool = True,
                  category: str | None = None) -> m.Recommendation:
        """A user's top ``k`` items (``category``: only items of it, where the
        service supports it)."""
        return self._call(calls.recommend(user_id, k, exclude_seen, category))

    def recommend_many(self, user_ids: Sequence[str], k: int = 20, exclude_seen: bool = True,
                       category: str | None = None) -> list[m.Recommendation]:
        """One recommendation per user id, in order, through the batch endpoint (1,000
        ids per request)."""
        results: list[m.Recommendation] = []
        for chunk in calls.chunks(user_ids, calls.MAX_BATCH_USERS):
            call = calls.recommend_batch(chunk, k, exclude_seen, category)
            batch = self._call(call)
            results.extend(batch)
        return results

    def similar_items(self, item_id: str, k: int = 20) -> m.SimilarItems:
        """The ``k`` items most like ``item_id`` in the served model."""
        return self._call(calls.similar_items(item_id, k))

    # ---- admin endpoints --------------------------------------------------------

    def retrain(self) -> m.QueuedJob:
        """Close the open period now and queue its retrain (409 :class:`Conflict`: a
        retrain is running, or the period is empty)."""
        return self._call(calls.retrain())

    def retry_period(self, period_id: int) -> m.QueuedJob:
        """Queue again the retrain of a period whose retrain failed."""
        return self._call(calls.retry_period(period_id))

    def job(self, job_id: str) -> m.Job:
        return self._call(calls.job(job_id))

    def wait_job(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> m.Job:
        """The job once it has succeeded or failed (check ``status``); raises
        :class:`WaitTimeout` when it has not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.finished:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g} s",
                                  detail=job.status)
            time.sleep(min(poll_s, left))

    def models(self) -> list[m.ModelVersion]:
        """Every model version, newest first."""
        return self._call(calls.models())

    def activate(self, version: int) -> m.ModelVersion:
        """Serve this version now, on every replica (a rollback)."""
        return self._call(calls.activate(version))

    def pin(self, version: int) -> m.ModelVersion:
        """Keep this version whatever the retention says."""
        return self._call(calls.pin(version, True))

    def unpin(self, version: int) -> m.ModelVersion:
        return self._call(calls.pin(version, False))

    def periods(self) -> list[m.Period]:
        """Every period, oldest first (the open one last)."""
        return self._call(calls.periods())

    def strategies(self, periods: int | None = None) -> m.StrategyOverview:
        """The served strategy, the challengers, and their scores (``periods``: how
        many of the newest evaluated periods)."""
        return self._call(calls.strategies(periods))

    def choose_strategy(self, name: str) -> m.StrategyOverview:
        """Serve this strategy's newest model now and from now on."""
        return self._call(calls.choose_strategy(name))

    def set_item(self, item_id: str, categories: Sequence[str] = (),
                 hidden: bool = False) -> m.ItemInfo:
        """Store an item's categories and whether it is hidden, replacing what it had
        (an item no interaction named yet may be described first)."""
        return self._call(calls.set_item(item_id, categories, hidden))

    def item(self, item_id: str) -> m.ItemInfo:
        """An item's metadata (404 :class:`NotFound`: neither described nor seen)."""
        return self._call(calls.item(item_id))

    def delete_user(self, user_id: str) -> m.UserDeleted:
        """Delete a user's data (404 :class:`NotFound`: a user never seen)."""
        return self._call(calls.delete_user(user_id))

    def export_interactions(self, since: float | None = None) -> Iterator[m.StoredInteraction]:
        """Every stored interaction (stamped at or after ``since``, Unix seconds),
        oldest first, read from the stream as it comes. The request is sent when
        iteration starts; close the iterator to stop early. A stream cut short
        raises :class:`Unavailable` (it is not retried: rows already read would come
        again)."""
        response = self._send(calls.export_interactions(since), stream=True)
        try:
            for line in response.iter_lines():
                row = calls.export_line(line)
                if row is not None:
                    yield row
        except httpx.TransportError as error:
            raise Unavailable(f"the interaction export was cut short: {error!r}") from error
        finally:
            response.close()

    # ---- operations -------------------------------------------------------------

    def health(self) -> bool:
        """True while the service's process answers (raises otherwise)."""
        return self._call(calls.health())

    def ready(self) -> m.Readiness:
        """Whether the service's database (and Redis) answer; not ready is an answer."""
        return self._call(calls.ready())

    def prometheus_metrics(self) -> str:
        """The service's metrics in Prometheus' text format."""
        return self._call(calls.prometheus_metrics())
