"""Engines and sessions for SQLite (embedded mode) and PostgreSQL (distributed mode)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from smlrec.settings import normalize_database_url

log = logging.getLogger(__name__)

# Connection execution option: begin the transaction as a writer. On SQLite this
# emits BEGIN IMMEDIATE, so read-then-write transactions (dense id allocation)
# are serialised by SQLite's write lock instead of failing on a stale snapshot.
WRITE_OPTION = "smlrec_write"

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite_url(url: str) -> bool:
    return make_url(normalize_database_url(url)).get_backend_name() == "sqlite"


def _ensure_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would defer
        # BEGIN past our SELECTs); SQLAlchemy emits BEGIN in the hook below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before it returns, as a 202 promises
            # (NORMAL in WAL mode may lose the last commits on a power cut)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` (plain ``postgresql://`` URLs get psycopg 3).

    SQLite: the parent folder is created, WAL journal, synchronous FULL, 30 s busy
    timeout, foreign keys on, usable from any thread. PostgreSQL: connections are pinged before use.
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`."""
    url = normalize_database_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        _ensure_sqlite_folder(url)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _install_sqlite_hooks(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if make_url(url).get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("connect_timeout", 5)
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
