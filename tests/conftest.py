"""Fixtures every part of the suite shares: migrated SQLite files and Redis key prefixes.

Servers: ``SMLREC_TEST_REDIS_URL`` (default: the local Redis); a test that needs
a server that does not answer is skipped, except under ``CI=true``, where such a
skip is a failure (CI starts both servers, so a missing one is a broken run, not
a smaller one). PostgreSQL fixtures live beside the
tests that use them (schemas per test for the store and the service, whole
databases per module for the worker's multi-process tests).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from store.migrate import upgrade

REDIS_URL = os.environ.get("SMLREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The reasons the fixtures give when a server does not answer (MovieLens-100K
# missing from the cache, redis-server not installed etc. are not among them).
SERVER_MISSING = re.compile(
    r"PostgreSQL not reachable|Redis not reachable|PostgreSQL or Redis not reachable"
    r"|no unused Redis database number"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI=true a test skipped for a missing PostgreSQL or Redis fails."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (report.skipped and _in_ci() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if SERVER_MISSING.search(reason):
        report.outcome = "failed"
        report.longrepr = f"CI=true and a server the test needs is missing: {reason}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, made once and copied for each test (migrating is slow)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database file of this test's own."""
    path = tmp_path / "smlrec.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as error:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {error}")
    yield client
    client.close()


@pytest.fixture
def redis_url(redis_client: redis.Redis) -> str:
    """The test Redis' URL (the test is skipped when it is not reachable)."""
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; everything under it is deleted afterwards."""
    prefix = f"smlrec-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        redis_client.delete(*keys)
