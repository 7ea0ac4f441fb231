"""The worker drains the stream while it trains, and the service looks at
Redis persistence before it starts (distributed mode: PostgreSQL, Redis).

The boundary is held, deterministically, on a real lock: the test takes the
PostgreSQL advisory lock under which versions are numbered, so the boundary
trains and then waits to record its version. Rows appended meanwhile must reach
the database (checked there) while the job is still running.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from worker_testkit import (
    REDIS_URL,
    REPO,
    PostgresDatabases,
    ProcessRedis,
    distributed_env,
    free_port,
    libpq_url,
    make_settings,
    rows_of,
    wait_for,
)

from sml.data import InteractionLog
from store import ArtifactStore, RedisBus, Store
from store._base import _LOCK_NAMESPACE, LOCK_VERSIONS
from worker.runner import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_rows_are_stored_while_a_boundary_runs(
    pg_databases: PostgresDatabases, redis_prefix: str, tmp_path: Path,
    small_log: InteractionLog,
) -> None:
    url = pg_databases.create()
    settings = make_settings(url, tmp_path / "models", redis_url=REDIS_URL,
                             redis_prefix=redis_prefix)
    store = Store.from_url(url)
    api = RedisBus(REDIS_URL, prefix=redis_prefix)
    worker = Worker(settings, store, RedisBus(REDIS_URL, prefix=redis_prefix),
                    ArtifactStore(settings.model_dir))
    hold = psycopg.connect(libpq_url(url), autocommit=True)
    try:
        hold.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, LOCK_VERSIONS))
        worker.start()
        api.append_unseen(rows_of(small_log, 0, 300))
        wait_for(lambda: store.count_open() == 300, timeout=600)
        closed = store.close_period_and_queue()  # as a count rule would
        assert closed is not None
        job = closed[1]
        wait_for(lambda: (j := store.get_job(job.job_id)) and j.status == "running", timeout=600)

        api.append_unseen(rows_of(small_log, 300, 500))  # while the boundary waits
        wait_for(lambda: store.count_open() == 200, timeout=600)
        running = store.get_job(job.job_id)
        assert running is not None and running.status == "running"
        assert api.backlog() == 0

        hold.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, LOCK_VERSIONS))
        done = wait_for(lambda: (j := store.get_job(job.job_id)) and
                        j.status in ("succeeded", "failed") and j, timeout=600)
        assert done.status == "succeeded", done.error
        assert [(p.status, p.n_interactions) for p in store.list_periods()] == [
            ("trained", 300), ("open", 200)]
    finally:
        hold.close()
        worker.stop(timeout=60)
        worker.bus.close()
        api.close()
        store.close()


def _serve(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    port = free_port()
    return subprocess.run(
        [sys.executable, "-m", "smlrec.cli", "serve", "--no-worker", "--port", str(port)],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
        timeout=600)


def test_redis_without_persistence_is_refused_when_required(
    pg_databases: PostgresDatabases, process_redis: ProcessRedis, tmp_path: Path
) -> None:
    import redis

    client = redis.Redis.from_url(process_redis.url)
    try:
        if client.info("persistence").get("aof_enabled"):
            pytest.skip("the test Redis keeps an append-only file")
    finally:
        client.close()
    env = distributed_env(pg_databases.create(), process_redis, tmp_path / "models",
                          SMLREC_REQUIRE_REDIS_PERSISTENCE="true")
    refused = _serve(env, tmp_path)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "appendonly" in lines[0], refused.stderr
