"""Where a retrain request cuts the log (distributed mode: PostgreSQL, Redis).

The rows a replica acknowledged may still wait in the Redis stream when an
admin asks for a retrain: the request must neither be refused as "empty" nor
cut wherever the worker happens to be. Checked against the database: the
closed period holds exactly the rows acknowledged before the request, the open
one exactly those after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from worker_testkit import REDIS_URL, PostgresDatabases, make_settings, wait_for

from smlrec.app import create_app
from smlrec.settings import Settings
from store import ArtifactStore, RedisBus, Store
from worker.runner import Worker

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ADMIN = {"Authorization": "Bearer admin-secret"}


def _rows(tag: str, n: int) -> list[dict[str, object]]:
    return [{"user_id": f"u{i % 300}", "item_id": f"i{(i * 7) % 500}",
             "timestamp": 1.7e9 + i, "event_id": f"{tag}-{i}"} for i in range(n)]


@pytest.fixture
def distributed(pg_databases: PostgresDatabases, redis_prefix: str,
                tmp_path: Path) -> Iterator[tuple[Settings, Store]]:
    settings = make_settings(pg_databases.create(), tmp_path / "models", redis_url=REDIS_URL,
                             redis_prefix=redis_prefix)
    store = Store.from_url(settings.database_url)
    yield settings, store
    store.close()


def test_admin_retrain_cuts_at_the_request_while_rows_wait_in_the_stream(
    distributed: tuple[Settings, Store],
) -> None:
    settings, store = distributed
    bus = RedisBus(REDIS_URL, prefix=settings.redis_prefix)
    worker: Worker | None = None
    try:
        with TestClient(create_app(settings, run_worker=False)) as api:
            for n in range(5):  # 5,000 acknowledged rows, no worker draining them yet
                answer = api.post("/v1/interactions",
                                  json={"interactions": _rows(f"before{n}", 1000)})
                assert answer.status_code == 202, answer.text
            assert store.count_open() == 0 and bus.client.xlen(bus.stream) == 5

            retrain = api.post("/v1/admin/retrain", headers=ADMIN)
            assert retrain.status_code == 202, retrain.text  # not 409 "empty"
            job_id, period_id = retrain.json()["job_id"], retrain.json()["period_id"]
            assert api.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()["status"] == \
                "queued"
            again = api.post("/v1/admin/retrain", headers=ADMIN)
            assert again.status_code == 409  # one retrain at a time, as before

            after = api.post("/v1/interactions", json={"interactions": _rows("after", 700)})
            assert after.status_code == 202

            worker = Worker(settings, store, RedisBus(REDIS_URL, prefix=settings.redis_prefix),
                            ArtifactStore(settings.model_dir))
            worker.start()
            job = wait_for(lambda: (j := store.get_job(job_id)) and j.status in
                           ("succeeded", "failed") and j, timeout=600)
            assert job.status == "succeeded", job.error
            wait_for(lambda: store.count_open() == 700, timeout=600)

        closed = store.get_period(period_id)
        assert closed is not None and closed.status == "trained"
        assert closed.n_interactions == 5000
        arrays = store.period_arrays(period_id)
        assert len(arrays) == 5000
        assert [p.status for p in store.list_periods()] == ["trained", "open"]
        assert store.list_periods()[-1].n_interactions == 700
        assert bus.backlog() == 0
    finally:
        if worker is not None:
            worker.stop(timeout=60)
            worker.bus.close()
        bus.close()


def test_a_cut_read_twice_closes_one_period(distributed: tuple[Settings, Store]) -> None:
    """A worker that dies after making a cut but before acknowledging it reads it
    again: the second reading changes nothing."""
    _, store = distributed
    from store import NewInteraction

    store.ingest([NewInteraction(f"u{i}", f"i{i}", 1.7e9, f"e{i}") for i in range(10)])
    job = store.queue_for_open_period()
    first = store.close_at_cut("1-0", job_id=job.job_id)
    assert first is not None and first[1].job_id == job.job_id
    store.ingest([NewInteraction("u1", "i2", 1.7e9, "late")])
    assert store.close_at_cut("1-0", job_id=job.job_id) is None
    assert [p.status for p in store.list_periods()] == ["closed", "open"]
    assert store.count_open() == 1


def test_the_time_rule_cuts_the_stream_when_the_window_ends(
    distributed: tuple[Settings, Store],
) -> None:
    """Distributed time rule: at the end of the window the worker appends a cut, so
    the rows acknowledged by then land in the period, wherever they wait."""
    from sqlalchemy import update

    from store import NewInteraction
    from store.models import Period

    settings, store = distributed
    settings = settings.model_copy(update={"period": "time:1h"})
    api = RedisBus(REDIS_URL, prefix=settings.redis_prefix)
    worker = Worker(settings, store, RedisBus(REDIS_URL, prefix=settings.redis_prefix),
                    ArtifactStore(settings.model_dir))
    worker.start()
    try:
        api.append_unseen([NewInteraction(f"u{n}", f"i{n % 30}", 1.7e9 + n * 9 * 3600, f"e{n}")
                           for n in range(200)])  # stamps 9 h apart close nothing
        wait_for(lambda: store.count_open() == 200, timeout=600)
        assert [p.status for p in store.list_periods()] == ["open"]
        with store._tx() as session:  # the hour has passed
            session.execute(update(Period).where(Period.status == "open")
                            .values(opened_at=Period.opened_at - 3600))
        wait_for(lambda: store.list_periods()[0].status == "trained", timeout=600)
        first, latest = store.list_periods()
        assert first.n_interactions == 200 and latest.status == "open"
    finally:
        worker.stop(timeout=60)
        worker.bus.close()
        api.close()
