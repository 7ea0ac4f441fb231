"""The client's exceptions: one class per way a request can fail, each carrying
the HTTP status (None when no answer came) and the service's ``detail``."""

from __future__ import annotations

from typing import Any

import httpx


class SmlrecError(Exception):
    """A request to the service failed. ``status``: the HTTP status (None when no
    answer came); ``detail``: the body's ``detail`` (a string, or for 422 the list of
    what is wrong with which field), else the body's text."""

    def __init__(self, message: str, *, status: int | None = None, detail: Any = None,
                 method: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url


class InvalidRequest(SmlrecError):
    """The service refused what was sent: 422 (``detail`` names each field at fault),
    400 (not JSON), 413 (too large)."""


class Unauthorized(SmlrecError):
    """401: the API key or admin token is missing or malformed."""


class Forbidden(SmlrecError):
    """403: the API key or admin token is wrong."""


class NotFound(SmlrecError):
    """404: no such user, item, job, period or model version."""


class Conflict(SmlrecError):
    """409: the request does not fit the service's state (a retrain already running,
    an empty period, a strategy that is not configured, ...)."""


class TooManyNew(SmlrecError):
    """429: the batch would bring the open period more new users or items than the
    service's caps allow; nothing of it was stored."""


class Unavailable(SmlrecError):
    """The service stayed unavailable (503) through every retry the policy allowed, or
    could not be reached (``status`` None). For a request the client does not retry
    on a lost connection (one that is not idempotent) the outcome is unknown."""


class WaitTimeout(SmlrecError, TimeoutError):
    """A wait (``wait_job``) ran out of time before the state it waited for."""


_BY_STATUS: dict[int, type[SmlrecError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: TooManyNew,
    503: Unavailable,
}


def detail_of(response: httpx.Response) -> Any:
    """The body's ``detail``, else its text (a proxy's HTML page, say)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return body.get("detail", body) if isinstance(body, dict) else body


def error_for(response: httpx.Response) -> SmlrecError:
    """The exception a response of status 400 or above stands for."""
    detail = detail_of(response)
    request = response.request
    kind = _BY_STATUS.get(response.status_code, SmlrecError)
    return kind(f"{request.method} {request.url.path}: {response.status_code} {detail}",
                status=response.status_code, detail=detail, method=request.method,
                url=str(request.url))


def unreachable(method: str, url: str, error: httpx.TransportError,
                attempts: int) -> Unavailable:
    """The exception for a request whose last attempt got no answer."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return Unavailable(f"{method} {url}: no answer{tries}: {error!r}", method=method, url=url)
