"""Per-request metrics and one JSON access-log line per request (pure ASGI)."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.metrics import ServiceMetrics

access_log = logging.getLogger("service.access")

UNMATCHED = "<unmatched>"


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by route template (``/v1/users/{user_id}/
    recommendations``, never the raw path, so labels stay few)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status_code,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": client[0] if client else None,
                }))
