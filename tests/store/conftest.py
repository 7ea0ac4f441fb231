"""Shared fixtures for tests against the real databases and Redis.

PostgreSQL: one fresh database per session (``smlrec_test_<random>``, dropped at
the end) and a fresh, migrated schema in it per test (dropped after the test).
Redis: every test gets its own key prefix; its keys are deleted afterwards.
Servers: ``SMLREC_TEST_POSTGRES_URL`` / ``SMLREC_TEST_REDIS_URL``, defaulting to
the local ones; a test needing a server that does not answer is skipped.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from store import InProcessBus, RedisBus, Store
from store.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "SMLREC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SMLREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _libpq(url: str) -> str:
    """A URL psycopg understands (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresSchemas:
    """One throw-away database for the session and a fresh schema in it per test
    (dropping a schema is far cheaper than dropping a database)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.database = f"smlrec_test_{uuid.uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.database_url = (
            make_url(admin_url).set(database=self.database).render_as_string(hide_password=False)
        )

    def _admin(self, statement: sql.Composed, url: str | None = None) -> None:
        with psycopg.connect(
            _libpq(url or self.admin_url), autocommit=True, connect_timeout=5
        ) as conn:
            conn.execute(statement)

    def create(self, migrated: bool = True) -> str:
        """The URL (plain ``postgresql://``) of a new empty schema, migrated to
        head unless ``migrated=False``; every connection made from it uses it."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)), self.database_url)
        url = (
            make_url(self.database_url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        if migrated:
            upgrade(url)
        return url

    def drop(self, url: str) -> None:
        schema = make_url(url).query["options"]
        assert isinstance(schema, str)
        name = schema.removeprefix("-csearch_path=")
        self._admin(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)),
            self.database_url,
        )

    def drop_database(self) -> None:
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database))
        )


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PostgresSchemas]:
    try:
        psycopg.connect(_libpq(POSTGRES_URL), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {error}")
    schemas = PostgresSchemas(POSTGRES_URL)
    yield schemas
    schemas.drop_database()


@pytest.fixture
def pg_schema_factory(pg_schemas: PostgresSchemas) -> Iterator[Callable[..., str]]:
    """Makes fresh schemas (``migrated=False`` for an empty one), dropped after the test."""
    made: list[str] = []

    def make(migrated: bool = True) -> str:
        url = pg_schemas.create(migrated=migrated)
        made.append(url)
        return url

    yield make
    for url in made:
        pg_schemas.drop(url)


@pytest.fixture
def pg_url(pg_schema_factory: Callable[..., str]) -> str:
    """A migrated PostgreSQL schema of this test's own (plain postgresql:// URL)."""
    return pg_schema_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.from_url(db_url)
    yield opened
    opened.close()


@pytest.fixture
def redis_bus_factory(redis_prefix: str) -> Iterator[Callable[[], RedisBus]]:
    """Makes RedisBus instances sharing this test's prefix (as separate processes would)."""
    made: list[RedisBus] = []

    def make() -> RedisBus:
        bus = RedisBus(REDIS_URL, prefix=redis_prefix)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def bus_pair(
    request: pytest.FixtureRequest,
) -> tuple[InProcessBus, InProcessBus] | tuple[RedisBus, RedisBus]:
    """Two handles on one bus, as two processes (or one process twice) would hold."""
    if request.param == "memory":
        bus = InProcessBus()
        return bus, bus
    make: Callable[[], RedisBus] = request.getfixturevalue("redis_bus_factory")
    return make(), make()


@contextlib.contextmanager
def _writing_elsewhere(db_url: str) -> Iterator[None]:
    """Another connection pool (as another process has) committing writes in a loop for as
    long as the block runs."""
    other = Store.from_url(db_url)
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            other.put_state("elsewhere", time.time())

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()
        other.close()


@pytest.fixture
def concurrent_writer() -> Callable[[str], contextlib.AbstractContextManager[None]]:
    """``with concurrent_writer(db_url): ...`` runs the block while another connection
    keeps committing to the same database."""
    return _writing_elsewhere
