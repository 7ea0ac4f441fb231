"""Exception handlers: outages become 503 with Retry-After, an oversized
interaction batch 413, and validation errors 422 with JSON-safe details."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from service.interaction_schemas import TooManyInteractions
from store import BusUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


MAX_ECHOED_CHARS = 256  # longer inputs are cut in validation errors


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: any text a client sent (lone surrogates
    included) can be echoed back without failing to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by their names, and cut long
    strings (a 1 MB id is not echoed back whole)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > MAX_ECHOED_CHARS:
        return value[:MAX_ECHOED_CHARS] + "..."
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    what = "database" if isinstance(exc, StoreUnavailable) else "message bus"
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path, what, exc)
    return JSONResponse(
        {"detail": f"{what} unavailable, try again later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _too_many(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=status.HTTP_413_CONTENT_TOO_LARGE
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return AsciiJSONResponse(
        {"detail": _json_safe(jsonable_encoder(errors))},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    """The client closed the connection before its body was complete: nothing was
    stored; no one reads the answer, but logs and metrics see a 4xx, not a 500."""
    log.info("%s %s: the client disconnected before the body was complete",
             request.method, request.url.path)
    return JSONResponse({"detail": "the request body was not complete: the client "
                         "disconnected"}, status_code=status.HTTP_400_BAD_REQUEST)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(BusUnavailable, _unavailable)
    app.add_exception_handler(TooManyInteractions, _too_many)
    app.add_exception_handler(RequestValidationError, _invalid)
