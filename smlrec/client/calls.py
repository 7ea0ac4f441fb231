"""The requests of the HTTP API, described once for the sync and the async client:
each endpoint as a :class:`Call` (method, path, query, body, which credential, whether
it may be sent twice, how its answer is read), and the retry policy both follow.

A request is retried when the service answers 503 (it applied nothing of it), after
the ``Retry-After`` seconds, and, when it is idempotent, when no answer came. Never
on another status: a 4xx says the request itself is wrong.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from smlrec.client import models as m
from smlrec.client.errors import error_for, unreachable

T = TypeVar("T")
R = TypeVar("R")
Auth = Literal["client", "admin", "none"]

MAX_INTERACTIONS = 10_000  # rows per POST /v1/interactions
MAX_BATCH_USERS = 1_000  # user ids per POST /v1/recommendations


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request is retried. ``attempts`` counts the first try; no retry
    starts later than ``max_total_s`` after it. The wait is the 503's
    ``Retry-After`` (seconds, or an HTTP date), else ``backoff_s`` doubling up to
    ``max_backoff_s``."""

    attempts: int = 5
    max_total_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, elapsed: float, retry_after: float | None) -> float | None:
        """Seconds to wait before the try after ``attempt`` (1 for the first), or None
        when the policy allows no more."""
        if attempt >= self.attempts:
            return None
        wait = retry_after
        if wait is None:
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        if elapsed + wait > self.max_total_s:
            return None
        return wait


NO_RETRY = RetryPolicy(attempts=1)


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds from now (None when absent or unreadable)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how its answer is read. ``accept``: statuses of 400 and above
    that ``parse`` reads instead of raising (readiness answers 503 when not ready)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    auth: Auth = "client"
    params: Mapping[str, Any] | None = None
    body: Any = None
    idempotent: bool = False
    accept: tuple[int, ...] = ()
    retry_503: bool = True


@dataclass
class Attempts:
    """One request's tries under a policy: says after each whether to try again and
    how long to wait first, or raises the exception that ends it."""

    policy: RetryPolicy
    call: Call[Any]
    attempt: int = 0
    started: float = field(default_factory=time.monotonic)

    def after_error(self, error: httpx.TransportError) -> float:
        """The wait before the next try, when no answer came; raises Unavailable when
        the call is not idempotent or the policy allows no more."""
        wait = None
        if self.call.idempotent:
            wait = self.policy.delay(self.attempt, time.monotonic() - self.started, None)
        if wait is None:
            raise unreachable(self.call.method, self.call.path, error, self.attempt) from error
        return wait

    def after_response(self, response: httpx.Response) -> float | None:
        """The wait before the next try (a 503 the policy still retries), else None."""
        if response.status_code != 503 or not self.call.retry_503:
            return None
        return self.policy.delay(self.attempt, time.monotonic() - self.started,
                                 retry_after(response))


def failed(response: httpx.Response, call: Call[Any]) -> bool:
    return response.status_code >= 400 and response.status_code not in call.accept


def raise_for(response: httpx.Response) -> None:
    """Raise the exception of a response of 400 or above (its body read)."""
    raise error_for(response)


def headers(auth: Auth, api_key: str | None, admin_token: str | None) -> dict[str, str]:
    if auth == "client" and api_key:
        return {"X-API-Key": api_key}
    if auth == "admin" and admin_token:
        return {"Authorization": f"Bearer {admin_token}"}
    return {}


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items (an iterator is read lazily)."""
    if size < 1:
        raise ValueError("a chunk holds at least one item")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def segment(value: str | int) -> str:
    """An id as one path segment (``/``, ``?``, ``#`` and the like escaped)."""
    return quote(str(value), safe="")


def _json(parse: Callable[[Any], R]) -> Callable[[httpx.Response], R]:
    return lambda response: parse(response.json())


# ---- client endpoints (X-API-Key) ---------------------------------------------------


def post_interactions(rows: Sequence[m.Interaction | Mapping[str, Any]]) -> Call[m.Ingested]:
    """One request of at most 10,000 rows; idempotent when every row has an event id
    (the service counts a repeated event id once)."""
    body = [m.row_json(row) for row in rows]
    return Call("POST", "/v1/interactions", _json(m.Ingested.from_json),
                body={"interactions": body},
                idempotent=all(row.get("event_id") is not None for row in body))


def _rec_params(k: int, exclude_seen: bool, category: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"k": k, "exclude_seen": exclude_seen}
    if category is not None:
        params["category"] = category
    return params


def recommend(user_id: str, k: int, exclude_seen: bool,
              category: str | None) -> Call[m.Recommendation]:
    return Call("GET", f"/v1/users/{segment(user_id)}/recommendations",
                _json(m.Recommendation.from_json), params=_rec_params(k, exclude_seen, category),
                idempotent=True)


def _results(body: Mapping[str, Any]) -> list[m.Recommendation]:
    return [m.Recommendation.from_json(r) for r in body["results"]]


def recommend_batch(user_ids: Sequence[str], k: int, exclude_seen: bool,
                    category: str | None) -> Call[list[m.Recommendation]]:
    """At most 1,000 ids; reading, so it is retried like a GET."""
    params = {"category": category} if category is not None else None
    return Call("POST", "/v1/recommendations", _json(_results), params=params,
                body={"user_ids": list(user_ids), "k": k, "exclude_seen": exclude_seen},
                idempotent=True)


def similar_items(item_id: str, k: int) -> Call[m.SimilarItems]:
    return Call("GET", f"/v1/items/{segment(item_id)}/similar", _json(m.SimilarItems.from_json),
                params={"k": k}, idempotent=True)


# ---- admin endpoints (Bearer token) -------------------------------------------------


def retrain() -> Call[m.QueuedJob]:
    return Call("POST", "/v1/admin/retrain", _json(m.QueuedJob.from_json), auth="admin")


def retry_period(period_id: int) -> Call[m.QueuedJob]:
    return Call("POST", f"/v1/admin/periods/{segment(period_id)}/retrain",
                _json(m.QueuedJob.from_json), auth="admin")


def job(job_id: str) -> Call[m.Job]:
    return Call("GET", f"/v1/admin/jobs/{segment(job_id)}", _json(m.Job.from_json),
                auth="admin", idempotent=True)


def models() -> Call[list[m.ModelVersion]]:
    return Call("GET", "/v1/admin/models",
                _json(lambda b: [m.ModelVersion.from_json(v) for v in b["models"]]),
                auth="admin", idempotent=True)


def activate(version: int) -> Call[m.ModelVersion]:
    """Serving a given version twice is serving it once: idempotent."""
    return Call("POST", f"/v1/admin/models/{segment(version)}/activate",
                _json(m.ModelVersion.from_json), auth="admin", idempotent=True)


def pin(version: int, pinned: bool) -> Call[m.ModelVersion]:
    return Call("PUT" if pinned else "DELETE", f"/v1/admin/models/{segment(version)}/pin",
                _json(m.ModelVersion.from_json), auth="admin", idempotent=True)


def periods() -> Call[list[m.Period]]:
    return Call("GET", "/v1/admin/periods",
                _json(lambda b: [m.Period.from_json(p) for p in b["periods"]]),
                auth="admin", idempotent=True)


def strategies(periods: int | None) -> Call[m.StrategyOverview]:
    return Call("GET", "/v1/admin/strategies", _json(m.StrategyOverview.from_json),
                auth="admin", params={"periods": periods} if periods is not None else None,
                idempotent=True)


def choose_strategy(name: str) -> Call[m.StrategyOverview]:
    return Call("POST", "/v1/admin/strategy", _json(m.StrategyOverview.from_json),
                auth="admin", body={"strategy": name}, idempotent=True)


def set_item(item_id: str, categories: Sequence[str], hidden: bool) -> Call[m.ItemInfo]:
    """Replaces what the item had: the same request twice stores the same."""
    return Call("PUT", f"/v1/items/{segment(item_id)}", _json(m.ItemInfo.from_json),
                auth="admin", body={"categories": list(categories), "hidden": hidden},
                idempotent=True)


def item(item_id: str) -> Call[m.ItemInfo]:
    return Call("GET", f"/v1/items/{segment(item_id)}", _json(m.ItemInfo.from_json),
                auth="admin", idempotent=True)


def delete_user(user_id: str) -> Call[m.UserDeleted]:
    """Not retried on a lost connection: a second try would answer 404."""
    return Call("DELETE", f"/v1/admin/users/{segment(user_id)}",
                _json(m.UserDeleted.from_json), auth="admin")


def export_interactions(since: float | None) -> Call[None]:
    """Streamed: the caller reads the lines (retries cover the answer's start only)."""
    return Call("GET", "/v1/admin/interactions/export", lambda response: None, auth="admin",
                params={"since": since} if since is not None else None, idempotent=True)


def export_line(line: str) -> m.StoredInteraction | None:
    """One line of the export (None for a blank one)."""
    return m.StoredInteraction.from_json(json.loads(line)) if line.strip() else None


# ---- operations (no credentials) ----------------------------------------------------


def health() -> Call[bool]:
    return Call("GET", "/healthz", lambda response: True, auth="none", idempotent=True)


def _readiness(response: httpx.Response) -> m.Readiness:
    body = response.json()
    if response.status_code == 503:
        return m.Readiness.from_json(body.get("detail") or {}, ready=False)
    return m.Readiness.from_json(body, ready=True)


def ready() -> Call[m.Readiness]:
    """Not ready (503) is an answer, not retried."""
    return Call("GET", "/readyz", _readiness, auth="none", idempotent=True, accept=(503,),
                retry_503=False)


def prometheus_metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda response: response.text, auth="none",
                idempotent=True)
