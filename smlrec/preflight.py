"""Checks made before anything starts, so that a process that cannot work says
why in one line and exits, instead of half-starting: the listening socket is
bound first (a taken port fails before any migration runs or a token is
generated), then the database and Redis must answer, distributed mode needs an
explicit admin token, and Redis persistence is looked at (a warning, or a
refusal with ``SMLREC_REQUIRE_REDIS_PERSISTENCE``). Embedded mode without an
admin token keeps a generated one in a file (:func:`resolve_admin_token`), never
in the log.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from pathlib import Path

from smlrec.settings import Settings, redacted

log = logging.getLogger("smlrec")


class StartupError(Exception):
    """The process cannot start; the message says why, in one line."""


def read_admin_token(path: Path) -> str | None:
    """The admin token kept in ``path`` (None: no file, or an empty one)."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def stored_admin_token(path: Path) -> tuple[str, bool]:
    """The admin token kept in ``path``, and whether it was generated now: a file
    that is missing or empty gets a new random token, written with mode 0600 (the
    folder is created); a token that is there is reused."""
    token = read_admin_token(path)
    if token:
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(token + "\n")
    os.replace(partial, path)  # whole or absent, whatever stops this process
    return token, True


def resolve_admin_token(settings: Settings) -> str:
    """``SMLREC_ADMIN_TOKEN``; else, in embedded mode, the one kept in
    ``SMLREC_ADMIN_TOKEN_FILE``, generated there on the first start. Says where it
    is (the token itself never goes into the log)."""
    if settings.admin_token:
        return settings.admin_token
    check_admin_token(settings)  # distributed mode: the replicas must share one
    path = settings.admin_token_file
    try:
        token, created = stored_admin_token(path)
    except OSError as error:
        raise StartupError(f"cannot keep the generated admin token in {path} ({error}); "
                           "set SMLREC_ADMIN_TOKEN or SMLREC_ADMIN_TOKEN_FILE") from None
    if created:
        log.warning("SMLREC_ADMIN_TOKEN is not set: generated an admin token and stored "
                    "it in %s (read it there; it stays the same across restarts)", path)
    else:
        log.info("admin token: the one stored in %s (SMLREC_ADMIN_TOKEN is not set)", path)
    return token


def check_admin_token(settings: Settings) -> None:
    """Replicas behind a load balancer must share one admin token: a generated
    one differs on each, and admin calls would succeed at random."""
    if settings.redis_url and not settings.admin_token:
        raise StartupError(
            "SMLREC_ADMIN_TOKEN must be set in distributed mode (SMLREC_REDIS_URL is set): "
            "every API replica needs the same admin token")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket of the service, bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror or error}") \
            from None
    sock.set_inheritable(True)
    return sock


def check_database(settings: Settings) -> None:
    """The database must answer (a few seconds at most)."""
    from sqlalchemy import exc, text

    from store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except exc.SQLAlchemyError as error:
        cause = getattr(error, "orig", None) or error
        raise StartupError(f"cannot reach the database at {redacted(settings.database_url)}: "
                           f"{_first_line(cause)}") from None
    finally:
        engine.dispose()


def check_redis(settings: Settings) -> None:
    """Redis must answer, and should keep what it acknowledged over a restart."""
    if not settings.redis_url:
        return
    from store import BusUnavailable, RedisBus

    bus = RedisBus(settings.redis_url, prefix=settings.redis_prefix, socket_timeout=5.0)
    try:
        bus.ping()
        gap = bus.persistence_gap()
    except BusUnavailable as error:
        raise StartupError(f"cannot reach Redis at {redacted(settings.redis_url)}: "
                           f"{_first_line(error.__cause__ or error)}") from None
    finally:
        bus.close()
    if gap is None:
        return
    if settings.require_redis_persistence:
        raise StartupError(f"{gap} (SMLREC_REQUIRE_REDIS_PERSISTENCE is set; turn on "
                           "appendonly in Redis)")
    log.warning("%s; turn on appendonly in Redis, or set SMLREC_REQUIRE_REDIS_PERSISTENCE "
                "to refuse to start without it", gap)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
