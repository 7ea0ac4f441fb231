"""Per-request metrics and a JSON access-log line per request (pure ASGI).

Which requests log at INFO is a setting (``SMLREC_ACCESS_LOG``): by default the
writes (anything but GET, HEAD and OPTIONS) and every answer of 400 or more; the
successful reads, most of the traffic (recommendations, health checks, scrapes,
a client polling a job), log at DEBUG; ``all`` logs every request at INFO and
``off`` none."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.metrics import ServiceMetrics

access_log = logging.getLogger("service.access")

UNMATCHED = "<unmatched>"
READS = frozenset({"GET", "HEAD", "OPTIONS"})


def access_level(mode: str, method: str, status: int) -> int | None:
    """The level of a request's access-log line under ``mode`` (None: no line)."""
    if mode == "off":
        return None
    if mode == "all" or status >= 400 or (mode == "writes_and_errors" and method not in READS):
        return logging.INFO
    return logging.DEBUG


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template (``/v1/users/{user_id}/
    recommendations``, never the raw path, so labels stay few)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics,
                 access: str = "writes_and_errors") -> None:
        self.app = app
        self.metrics = metrics
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(method=method, route=route, status=str(status_code)).inc()
            self.metrics.latency.labels(method=method, route=route).observe(elapsed)
            level = access_level(self.access, method, status_code)
            if level is not None and access_log.isEnabledFor(level):
                client = scope.get("client")
                fields = {
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": client[0] if client else None,
                }
                access_log.log(level, json.dumps(fields), extra={"fields": fields})
