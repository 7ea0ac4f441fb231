"""``GET /v1/users/{user_id}/recommendations`` without the framework's
per-request machinery, for the requests that need none of it.

The route is the service's hot path, and at thousands of requests a second the
event loop's time per request bounds its throughput: routing, the dependency
and parameter machinery, the request object and the response class are a good
part of it (bench/RESULTS.md has what skipping them gained). It answers a
request itself when it is plainly valid (a well-formed id, ``k`` and
``exclude_seen`` as plain literals, a ``category`` of the route's length, the
client key right when one is set) and hands every other request, unchanged,
to the documented route, which then answers it (or refuses it with its usual
4xx) exactly as before. The body it
writes is the route's body, from the same code (``Recommender.recommend_one``),
and the request is still counted and logged under the route's template.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import same_secret
from service.schemas import DEFAULT_K, MAX_CATEGORY_LENGTH, MAX_ID_LENGTH, MAX_K

PREFIX = "/v1/users/"
SUFFIX = "/recommendations"
ROUTE = PREFIX + "{user_id}" + SUFFIX


class _Template(NamedTuple):
    path: str  # what a matched route exposes to the middleware


_ROUTE = _Template(ROUTE)
_TRUE = {"true": True, "1": True, "false": False, "0": False}
_HEADERS = [(b"content-type", b"application/json")]


def _query(raw: bytes) -> tuple[int, bool, str | None] | None:
    """``(k, exclude_seen, category)`` when they are absent or plain valid values;
    None for anything the route should judge (last value wins, as in the route)."""
    k, exclude_seen, category = DEFAULT_K, True, None
    if not raw:
        return k, exclude_seen, category
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name == "k":
            if not (value.isascii() and value.isdigit() and len(value) <= 4):
                return None
            k = int(value)
            if not 1 <= k <= MAX_K:
                return None
        elif name == "exclude_seen":
            flag = _TRUE.get(value)
            if flag is None:
                return None
            exclude_seen = flag
        elif name == "category":
            if not 0 < len(value) <= MAX_CATEGORY_LENGTH or "\x00" in value:
                return None
            category = value
    return k, exclude_seen, category


class RecommendationsFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"].startswith(PREFIX) and scope["path"].endswith(SUFFIX)
                and await self._answer(scope, send)):
            await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is plainly valid; False: nothing was sent."""
        user_id = scope["path"][len(PREFIX) : -len(SUFFIX)]
        if (not 0 < len(user_id) <= MAX_ID_LENGTH or "/" in user_id or "\x00" in user_id
                or scope.get("root_path")):
            return False
        query = _query(scope["query_string"])
        app = scope.get("app")
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if query is None or runtime is None:
            return False
        expected = runtime.settings.api_key
        if expected is not None:
            given = Headers(scope=scope).get("x-api-key")  # as the route reads it
            if not given or not same_secret(given, expected):
                return False  # the route answers 401 or 403
        k, exclude_seen, category = query
        try:
            result = await runtime.recommender.recommend_one(
                runtime.holder.current, user_id, k, exclude_seen, category)
        except Exception:  # the route runs it again and answers errors its usual way
            return False
        body = result.render()
        scope["route"] = _ROUTE  # the label RequestMetricsMiddleware counts it under
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), *_HEADERS]})
        await send({"type": "http.response.body", "body": body})
        return True
