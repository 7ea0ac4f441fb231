"""Jobs, model versions with the active pointer and metrics, named state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from store import NewInteraction, Store
from store.models import Job


def test_job_lifecycle(store: Store) -> None:
    assert store.running_or_queued_job() is None
    job = store.create_job(3)
    assert (job.status, job.kind, job.period_id, job.attempts) == ("queued", "retrain", 3, 0)
    assert len(job.job_id) == 32
    assert store.next_queued_job() == job
    assert store.running_or_queued_job() == job

    assert store.claim_job(job.job_id)
    assert not store.claim_job(job.job_id)  # only one claimer wins
    running = store.get_job(job.job_id)
    assert running is not None and running.status == "running" and running.attempts == 1
    assert running.started_at is not None and running.heartbeat_at is not None
    assert store.next_queued_job() is None
    assert store.running_or_queued_job() == running

    store.heartbeat(job.job_id)
    store.finish_job(job.job_id, "succeeded", model_version=4)
    done = store.get_job(job.job_id)
    assert done is not None
    assert (done.status, done.model_version, done.error) == ("succeeded", 4, None)
    assert done.finished_at is not None
    assert store.running_or_queued_job() is None

    failed = store.create_job(4, kind="bootstrap")
    store.claim_job(failed.job_id)
    store.finish_job(failed.job_id, "failed", error="boom")
    info = store.get_job(failed.job_id)
    assert info is not None
    assert (info.kind, info.status, info.error) == ("bootstrap", "failed", "boom")

    assert store.get_job("nope") is None
    with pytest.raises(KeyError):
        store.finish_job("nope", "failed")
    with pytest.raises(ValueError):
        store.finish_job(job.job_id, "running")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.create_job(1, kind="other")  # type: ignore[arg-type]


def test_queued_jobs_come_oldest_first(store: Store) -> None:
    first = store.create_job(1)
    store.create_job(2)
    queued = store.next_queued_job()
    assert queued is not None and queued.job_id == first.job_id


def test_fail_stale_jobs(store: Store) -> None:
    stale = store.create_job(1)
    fresh = store.create_job(2)
    queued = store.create_job(3)
    store.claim_job(stale.job_id)
    store.claim_job(fresh.job_id)
    with store._tx() as session:  # the stale one last beat a minute ago
        session.execute(
            update(Job).where(Job.id == stale.job_id).values(heartbeat_at=time.time() - 60)
        )
    assert store.fail_stale_jobs(older_than_s=30) == 1
    info = store.get_job(stale.job_id)
    assert info is not None and (info.status, info.error) == ("failed", "interrupted")
    assert info.finished_at is not None
    running = store.get_job(fresh.job_id)
    assert running is not None and running.status == "running"
    waiting = store.get_job(queued.job_id)
    assert waiting is not None and waiting.status == "queued"
    assert store.fail_stale_jobs(older_than_s=30) == 0


def _record(store: Store, period_id: int) -> int:
    return store.record_version(
        period_id=period_id,
        strategy="sml",
        path=f"v{period_id}.pt",
        sha256="ab" * 32,
        size_bytes=1234,
        train_seconds=1.5,
        n_users=10 + period_id,
        n_items=20 + period_id,
    )


def test_versions_active_pointer_and_metrics(store: Store) -> None:
    assert store.latest_version() is None
    assert store.active_version() is None
    assert store.list_versions() == []
    assert [_record(store, p) for p in range(3)] == [1, 2, 3]
    assert store.latest_version() == 3
    assert store.active_version() is None

    store.set_active_version(2)
    assert store.active_version() == 2
    versions = store.list_versions()
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.active for v in versions] == [False, True, False]
    v2 = store.get_version(2)
    assert v2 is not None and v2.active and v2.metrics is None
    assert (v2.period_id, v2.strategy, v2.path, v2.size_bytes) == (1, "sml", "v1.pt", 1234)
    assert (v2.n_users, v2.n_items, v2.train_seconds) == (11, 21, 1.5)
    assert store.get_version(9) is None

    metrics = {"evaluated_on_period": 2, "recall@20": 0.25, "ndcg@20": 0.125, "n_interactions": 7}
    store.set_metrics(2, metrics)
    v2 = store.get_version(2)
    assert v2 is not None and v2.metrics == metrics
    with pytest.raises(KeyError):
        store.set_metrics(9, metrics)
    with pytest.raises(KeyError):
        store.set_active_version(9)
    assert store.active_version() == 2

    store.set_active_version(3)
    assert [v.active for v in store.list_versions()] == [True, False, False]


def test_state_values(store: Store) -> None:
    assert store.get_state("strategy_state") is None
    pointer = {"period_id": 3, "path": "state/p3.pt", "sha256": "cd" * 32}
    store.put_state("strategy_state", pointer)
    assert store.get_state("strategy_state") == pointer
    store.put_state("strategy_state", {"period_id": 4})
    assert store.get_state("strategy_state") == {"period_id": 4}
    store.put_state("numbers", [1, 2.5, "x", None])
    assert store.get_state("numbers") == [1, 2.5, "x", None]


def test_read_then_write_transactions_survive_a_concurrent_writer(
    store: Store, db_url: str, concurrent_writer: Callable[[str], Any]
) -> None:
    """Activating a version and marking a period trained read, then write: begun
    as plain readers, SQLite failed them at once ("database is locked") whenever
    another connection committed in between (thousands of times in 5 s beside a
    writing process); begun as writers, they wait their turn."""
    version = _record(store, 0)
    store.ingest([NewInteraction("u", "i", 1.0, None)])
    closed = store.close_period()
    assert closed is not None
    with concurrent_writer(db_url):
        for _ in range(300):  # a count, not a clock: as many collisions on any machine
            store.set_active_version(version)  # raised StoreUnavailable before
            store.mark_trained(closed.period_id)
    assert store.active_version() == version


def test_newest_version_and_newest_evaluated_version(store: Store) -> None:
    assert store.newest_version() is None and store.newest_version(evaluated=True) is None
    for period_id in range(3):
        _record(store, period_id)
    store.set_active_version(1)
    store.set_metrics(2, {"evaluated_on_period": 2, "recall@20": 0.5})
    newest = store.newest_version()
    assert newest is not None and (newest.version, newest.active, newest.metrics) == (3, False,
                                                                                      None)
    evaluated = store.newest_version(evaluated=True)
    assert evaluated is not None and evaluated.version == 2
    assert evaluated.metrics == {"evaluated_on_period": 2, "recall@20": 0.5}
    store.set_metrics(3, {"evaluated_on_period": 3, "recall@20": 0.6})
    assert store.newest_version(evaluated=True).version == 3  # type: ignore[union-attr]
    assert store.newest_version(evaluated=True) == store.newest_version()
