"""The ingestion benchmark at a tiny size: embedded always; distributed where
PostgreSQL and Redis answer (the figures' correctness rows must hold)."""

from __future__ import annotations

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from bench import ingestion


def test_embedded_ingestion_benchmark_stores_every_accepted_row() -> None:
    args = ingestion.parse_args(["--seconds", "2", "--clients", "2", "--batch", "100",
                                 "--max-requests", "12"])
    report = ingestion.run(args)
    stored = next(f for f in report.figures if "database afterwards" in f.name)
    assert stored.ok, stored


def _reachable() -> bool:
    try:
        libpq = make_url(ingestion.POSTGRES_URL).set(drivername="postgresql")
        psycopg.connect(libpq.render_as_string(hide_password=False), connect_timeout=3).close()
        redis.Redis.from_url(ingestion.REDIS_URL, socket_connect_timeout=3).ping()
    except (psycopg.OperationalError, redis.exceptions.ConnectionError):
        return False
    return True


@pytest.mark.postgres
@pytest.mark.redis
def test_distributed_ingestion_benchmark_stores_every_accepted_row() -> None:
    if not _reachable():
        pytest.skip("PostgreSQL or Redis not reachable")
    args = ingestion.parse_args(["--seconds", "2", "--clients", "2", "--batch", "100",
                                 "--max-requests", "10", "--distributed",
                                 "--drain-timeout", "60"])
    report = ingestion.run(args)
    checks = [f for f in report.figures if "database afterwards" in f.name]
    assert len(checks) == 2 and all(f.ok for f in checks), checks
