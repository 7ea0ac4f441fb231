"""Fixtures for the worker's tests: small drifting data, real databases and Redis.

SQLite: a migrated file per test. PostgreSQL: fresh databases per test module,
dropped after it. Redis: a key prefix (in-process buses) or a database number
(``smlrec`` subprocesses) per test, its keys deleted after it. Servers:
``SMLREC_TEST_POSTGRES_URL`` / ``SMLREC_TEST_REDIS_URL`` (default: the local ones).
Helpers the tests import live in ``worker_testkit``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from worker_testkit import (
    CLAIM_KEY,
    CLAIMABLE_DBS,
    POSTGRES_URL,
    REDIS_URL,
    SMALL,
    PostgresDatabases,
    Processes,
    ProcessRedis,
    libpq_url,
)

from sml.data import InteractionLog
from sml.synthetic import synthetic_drift
from store import Store


@pytest.fixture(scope="session")
def small_log() -> InteractionLog:
    """About 1,200 drifting interactions over four simulated days."""
    return synthetic_drift(SMALL)


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    store = Store.from_url(sqlite_url)
    yield store
    store.close()


@pytest.fixture(scope="module")
def pg_databases() -> Iterator[PostgresDatabases]:
    try:
        psycopg.connect(libpq_url(POSTGRES_URL), connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {error}")
    databases = PostgresDatabases(POSTGRES_URL)
    yield databases
    databases.drop_all()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


@pytest.fixture
def process_redis(redis_client: redis.Redis) -> Iterator[ProcessRedis]:
    """A Redis database of this test's own for ``smlrec`` subprocesses.

    The settings name no key prefix, so the processes use the bus's fixed key
    names; to keep concurrent test runs apart, the test claims an unused database
    number (a marker key set with NX) and deletes its keys afterwards."""
    base = REDIS_URL.rsplit("/", 1)[0]
    for db in random.sample(list(CLAIMABLE_DBS), len(CLAIMABLE_DBS)):
        client = redis.Redis.from_url(f"{base}/{db}", socket_connect_timeout=3)
        if client.dbsize() == 0 and client.set(CLAIM_KEY, "1", nx=True, ex=600):
            break
        client.close()
    else:
        pytest.skip("no unused Redis database number to run processes against")
    try:
        yield ProcessRedis(url=f"{base}/{db}", prefix="smlrec")
    finally:
        keys = [*client.scan_iter(match="smlrec:*", count=1000), CLAIM_KEY]
        client.delete(*keys)
        client.close()
