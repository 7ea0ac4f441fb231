"""Durability in distributed mode (PostgreSQL + Redis): a worker killed with
SIGKILL mid-ingestion or mid-retrain loses nothing, doubles nothing, leaves no
version on a partial artifact and no job stuck."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from worker_testkit import (
    REDIS_URL,
    PostgresDatabases,
    Processes,
    ProcessRedis,
    bodies_of,
    distributed_env,
    free_port,
    make_settings,
    rows_of,
    wait_for,
    wait_healthy,
)

from sml.data import InteractionLog
from sml.synthetic import SyntheticConfig, synthetic_drift
from store import ArtifactStore, NewInteraction, RedisBus, Store
from store._base import _LOCK_NAMESPACE, LOCK_VERSIONS
from worker.ingest import with_event_ids
from worker.runner import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

STREAM_ID = re.compile(r"^\d+-\d+:\d+$")
ADMIN = {"Authorization": "Bearer admin-secret"}


def interaction_counts(url: str) -> tuple[int, int, int]:
    """Rows, distinct event ids, and rows whose event id was derived from the stream."""
    with psycopg.connect(url) as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM interactions"
        ).fetchone() or (0, 0)
        ids = [r[0] for r in conn.execute("SELECT event_id FROM interactions")]
    return int(rows), int(distinct), sum(1 for e in ids if e and STREAM_ID.match(e))


@contextmanager
def versions_held(url: str) -> Iterator[psycopg.Connection]:
    """Hold the lock that numbers model versions: a boundary that reaches
    ``record_version`` (its artifact written) waits there, its job running,
    until the block ends. No clock decides whether the kill lands in time."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, LOCK_VERSIONS))
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_NAMESPACE, LOCK_VERSIONS))


def waiting_to_record(conn: psycopg.Connection) -> bool:
    """Whether a session of this database waits for the version-numbering lock."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objid = %s"
        " AND d.datname = current_database()",
        (LOCK_VERSIONS,),
    ).fetchone()
    return bool(row and row[0])


def verify_versions(store: Store, model_dir: Path) -> list[tuple[int, int]]:
    """Load and verify every recorded version; returns (version, period) pairs."""
    artifacts = ArtifactStore(model_dir)
    pairs = []
    for info in store.list_versions():
        payload = artifacts.load(info.path, info.sha256, info.size_bytes)
        assert payload["version"] == info.version
        pairs.append((info.version, info.period_id))
    return pairs


def test_entries_of_a_dead_consumer_are_stored_exactly_once(
    pg_databases: PostgresDatabases,
    redis_prefix: str,
    tmp_path: Path,
    small_log: InteractionLog,
) -> None:
    url = pg_databases.create()
    api_bus = RedisBus(REDIS_URL, prefix=redis_prefix)
    dead_bus = RedisBus(REDIS_URL, prefix=redis_prefix)
    worker_bus = RedisBus(REDIS_URL, prefix=redis_prefix)
    store = Store.from_url(url)
    worker: Worker | None = None
    try:
        with_ids = rows_of(small_log, 0, 100)
        without = [
            r.__class__(r.user_id, r.item_id, r.ts, None) for r in rows_of(small_log, 100, 300)
        ]
        api_bus.append(with_ids)
        api_bus.append(without[:100])
        api_bus.append(without[100:])
        # A worker read two entries, committed the second one and died before the ack.
        taken = dead_bus.read("dead-worker", count=2, block_ms=0)
        assert len(taken) == 2
        entry_id, rows = taken[1]
        assert store.ingest(with_event_ids(entry_id, rows)).accepted == 100
        assert api_bus.pending_count() == 2

        settings = make_settings(url, tmp_path / "models", redis_url=REDIS_URL)
        worker = Worker(settings, store, worker_bus, ArtifactStore(settings.model_dir))
        worker.start()
        wait_for(lambda: store.count_open() == 300 and api_bus.pending_count() == 0)
        # a last entry, stored in stream order: once it is in, nothing before it is pending
        api_bus.append([NewInteraction("marker", "marker", 1.0, "marker")])
        wait_for(lambda: store.count_open() == 301 and api_bus.pending_count() == 0)
        assert interaction_counts(url) == (301, 301, 200)
    finally:
        if worker is not None:
            worker.stop(timeout=30)
        for bus in (api_bus, dead_bus, worker_bus):
            bus.close()
        store.close()


def post(api: str, bodies: list[dict[str, Any]], with_ids: bool = True) -> int:
    if not with_ids:
        bodies = [{k: v for k, v in b.items() if k != "event_id"} for b in bodies]
    response = httpx.post(f"{api}/v1/interactions", json={"interactions": bodies}, timeout=30)
    assert response.status_code == 202, response.text
    accepted: int = response.json()["accepted"]
    return accepted


def retrain(api: str) -> str:
    response = httpx.post(f"{api}/v1/admin/retrain", headers=ADMIN, timeout=30)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_killed_workers_lose_nothing_and_leave_nothing_stuck(
    pg_databases: PostgresDatabases,
    process_redis: ProcessRedis,
    processes: Processes,
    tmp_path: Path,
) -> None:
    """One API replica and three workers: the leader is killed while it holds an
    unacknowledged stream entry, the next leader while it trains, and the last
    one is stopped warm (SIGTERM) while it trains."""
    url = pg_databases.create()
    model_dir = tmp_path / "models"
    env = distributed_env(
        url, process_redis, model_dir, SMLREC_LOCK_TTL_SECONDS="3", SMLREC_EMBED_DIM="64"
    )
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    server = processes.start(
        "api", ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)], env
    )
    workers = ["worker1", "worker2", "worker3"]
    for name in workers:
        processes.start(name, ["worker"], env)

    def leader() -> str | None:
        alive = [w for w in workers if w in processes.running]
        return next((w for w in alive if "is the leader" in processes.log(w)), None)

    data = synthetic_drift(
        SyntheticConfig(
            n_periods=3,
            interactions_per_period=4000,
            n_users_initial=300,
            n_items_initial=600,
            seed=5,
        )
    )
    bodies = bodies_of(data, 0, len(data))
    first_period = 8000  # rows; then two periods of about 2,000
    bus = process_redis.bus()
    store = Store.from_url(url)
    try:
        wait_healthy(api, server)
        wait_for(lambda: all("worker started" in processes.log(w) for w in workers), timeout=600)
        first = wait_for(leader)

        # 1. SIGKILL while the leader holds a stream entry it has not acknowledged.
        split = 6000
        mixed = [
            b if n % 2 else {k: v for k, v in b.items() if k != "event_id"}
            for n, b in enumerate(bodies[:split])
        ]

        def kill_once_pending() -> None:  # the worker reads the entry while we post it
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not bus.pending_count():
                time.sleep(0.001)
            processes.kill(first)

        killer = threading.Thread(target=kill_once_pending)
        killer.start()
        accepted = post(api, mixed)
        killer.join()
        pending_at_kill, stored_at_kill = bus.pending_count(), store.count_open()
        assert pending_at_kill == 1, stored_at_kill
        accepted += post(api, bodies[split:first_period])
        assert accepted == first_period
        wait_for(
            lambda: store.count_open() >= first_period and bus.pending_count() == 0, timeout=600
        )
        # a last row, stored in stream order: once it is in, nothing before it is pending
        post(api, [{"user_id": "marker", "item_id": "marker", "event_id": "marker"}])
        wait_for(lambda: store.count_open() > first_period and bus.pending_count() == 0)
        rows, distinct, derived = interaction_counts(url)
        assert (rows, distinct) == (first_period + 1, first_period + 1), stored_at_kill
        assert derived == split // 2  # rows sent without an event id got the stream entry's

        job0 = retrain(api)
        wait_for(lambda: (j := store.get_job(job0)) and j.status == "succeeded", timeout=600)

        # 2. SIGKILL in the middle of a boundary.
        second = (len(data) - first_period) // 2
        post(api, bodies[first_period : first_period + second])
        wait_for(lambda: store.count_open() == second, timeout=600)
        with versions_held(url) as held:
            doomed = retrain(api)
            wait_for(lambda: waiting_to_record(held))  # trained, artifact written, not recorded
            job = store.get_job(doomed)
            assert job is not None and job.status == "running"
            processes.kill(wait_for(leader))
        wait_for(lambda: (j := store.get_job(doomed)) and j.status == "failed", timeout=600)
        failed = store.get_job(doomed)
        assert failed is not None and failed.error == "interrupted"
        wait_for(lambda: store.active_version() == 2, timeout=600)

        # 3. SIGTERM in the middle of a boundary: it finishes, then the worker exits.
        post(api, bodies[first_period + second :])
        wait_for(lambda: store.count_open() == len(data) - first_period - second, timeout=600)
        with versions_held(url) as held:
            last = retrain(api)
            wait_for(lambda: waiting_to_record(held))  # the boundary is under way
            survivor = processes.running[wait_for(leader)]
            survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
        finished = store.get_job(last)
        assert finished is not None and finished.status == "succeeded", finished
        assert not bus.client.exists(bus.key("lock", "worker"))  # the lease was given up

        assert verify_versions(store, model_dir) == [(3, 2), (2, 1), (1, 0)]
        assert [p.status for p in store.list_periods()] == ["trained"] * 3 + ["open"]
        assert store.running_or_queued_job() is None
    finally:
        bus.close()
        store.close()
