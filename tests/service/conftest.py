"""Fixtures of the service tests: an app per test on its own migrated SQLite file
(or PostgreSQL database), and real Redis where a test is about distributed mode.
Helpers the tests import live in ``service_testkit``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from service_testkit import (
    POSTGRES_URL,
    SERVICE_REDIS_URL,
    ClientFactory,
    ModelWriter,
    TestClient,
    make_settings,
)
from sqlalchemy.engine import make_url

from smlrec.app import create_app
from smlrec.settings import Settings
from store import Store
from store.migrate import upgrade


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    """Embedded mode on this test's own SQLite file, manual periods, admin token "t"."""
    return make_settings(tmp_path, sqlite_url)


@pytest.fixture(params=["sqlite", "postgres_redis"])
def either_mode(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: str) -> Settings:
    """For a test that runs in both modes: embedded (this test's SQLite file), then
    distributed (this test's PostgreSQL database and Redis keys)."""
    if request.param == "sqlite":
        return make_settings(tmp_path, sqlite_url)
    distributed: Settings = request.getfixturevalue("distributed_settings")
    return distributed


@pytest.fixture
def make_client() -> ClientFactory:
    """``with make_client(settings) as client``: the app with its lifespan running
    (worker off unless ``run_worker=True``)."""

    @contextmanager
    def make(settings: Settings, run_worker: bool = False) -> Iterator[TestClient]:
        with TestClient(create_app(settings, run_worker=run_worker)) as client:
            yield client

    return make


@pytest.fixture
def client(settings: Settings, make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client(settings) as opened:
        yield opened


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A second handle on the test's database, for looking behind the API."""
    opened = Store.from_url(settings.database_url)
    yield opened
    opened.close()


@pytest.fixture
def models(store: Store, settings: Settings) -> ModelWriter:
    return ModelWriter(store, settings.model_dir)


# ---- PostgreSQL and Redis ----------------------------------------------------------


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresSchemas:
    """A migrated schema per test in the test database (its URL sets the
    search_path), dropped afterwards: much faster than a database per test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(_libpq(self.url), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement)

    def create(self) -> tuple[str, str]:
        """(schema name, database URL whose connections use it)."""
        name = f"smlrec_service_test_{uuid.uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        url = make_url(self.url).update_query_dict({"options": f"-csearch_path={name}"})
        rendered = url.render_as_string(hide_password=False)
        upgrade(rendered)
        return name, rendered

    def drop(self, name: str) -> None:
        self._admin(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_schemas() -> PostgresSchemas:
    try:
        psycopg.connect(_libpq(POSTGRES_URL), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {error}")
    return PostgresSchemas(POSTGRES_URL)


@pytest.fixture
def pg_url(pg_schemas: PostgresSchemas) -> Iterator[str]:
    """A migrated PostgreSQL schema of this test's own (a plain postgresql:// URL)."""
    name, url = pg_schemas.create()
    yield url
    pg_schemas.drop(name)


@pytest.fixture
def redis_prefix() -> str:
    """The service's Redis keys for this test (``SMLREC_REDIS_PREFIX``): its own,
    so test runs sharing the Redis server never touch each other's keys."""
    return f"smlrec-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[redis.Redis]:
    """The service tests' Redis database; this test's keys (``redis_prefix``)
    are deleted afterwards, no one else's."""
    client = redis.Redis.from_url(SERVICE_REDIS_URL, socket_connect_timeout=3,
                                  decode_responses=True)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        pytest.skip(f"Redis not reachable at {SERVICE_REDIS_URL}: {error}")
    yield client
    keys = list(client.scan_iter(match=f"{redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def distributed_settings(
    tmp_path: Path, pg_url: str, redis_client: redis.Redis, redis_prefix: str
) -> Settings:
    """Distributed mode: this test's PostgreSQL database, and the test Redis
    under this test's key prefix."""
    return make_settings(tmp_path, pg_url, redis_url=SERVICE_REDIS_URL,
                         redis_prefix=redis_prefix)
