"""Retrains that fail are retried, then surfaced, and can be asked again.

The fault is real: MODEL_DIR is a file, so no artifact can be written (as on a
full disk), then it becomes a folder again. Checked in the database: each job's
tries and order, the periods' statuses, exactly one version per period; over
HTTP: /readyz stays 200 and names the failed periods, /metrics counts them, and
the admin retry brings a period back, even one the strategy has moved past.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from worker_testkit import make_settings, rows_of, wait_for

from sml.data import InteractionLog
from smlrec.app import create_app
from store import ArtifactStore, InProcessBus, JobInfo, Store
from worker.runner import Worker

ADMIN = {"Authorization": "Bearer admin-secret"}
PERIOD = 300


def _finished(store: Store, job_id: str) -> JobInfo | None:
    job = store.get_job(job_id)
    return job if job is not None and job.status in ("succeeded", "failed") else None


def test_failed_retrains_are_retried_in_order_surfaced_and_retried_on_request(
    sqlite_url: str, sqlite_store: Store, tmp_path: Path, small_log: InteractionLog
) -> None:
    model_dir = tmp_path / "models"
    model_dir.write_bytes(b"")  # nothing can be saved under it
    settings = make_settings(sqlite_url, model_dir, retrain_attempts=3,
                             retrain_backoff_seconds=0.2)
    store = sqlite_store
    worker = Worker(settings, store, InProcessBus(), ArtifactStore(model_dir))
    worker.start()
    try:
        with TestClient(create_app(settings, run_worker=False)) as api:
            jobs = []
            for p in range(2):
                store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
                closed = store.close_period_and_queue()
                assert closed is not None
                jobs.append(closed[1].job_id)
            first, second = (wait_for(lambda j=j: _finished(store, j), timeout=600) for j in jobs)
            assert (first.status, first.attempts) == ("failed", 3)
            assert (second.status, second.attempts) == ("failed", 3)
            assert "FileExistsError" in (first.error or "")
            assert first.finished_at is not None and second.started_at is not None
            assert second.started_at >= first.finished_at  # period 1 waited for period 0

            periods = api.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
            assert [p["status"] for p in periods] == ["failed", "failed", "open"]
            ready = api.get("/readyz")
            assert ready.status_code == 200  # serving works
            assert ready.json()["failed_periods"] == [0, 1]
            assert "/v1/admin/periods/{period_id}/retrain" in ready.json()["retrain"]
            assert "smlrec_periods_failed 2.0" in api.get("/metrics").text

            model_dir.unlink()  # the disk is fixed
            model_dir.mkdir()
            store.ingest(rows_of(small_log, 2 * PERIOD, 3 * PERIOD))
            closed = store.close_period_and_queue()
            assert closed is not None
            done = wait_for(lambda: _finished(store, closed[1].job_id), timeout=600)
            assert done.status == "succeeded" and done.model_version == 1

            for period in (0, 1):  # the strategy has learnt period 2 already: they come late
                answer = api.post(f"/v1/admin/periods/{period}/retrain", headers=ADMIN)
                assert answer.status_code == 202, answer.text
                retried = wait_for(lambda a=answer: _finished(store, a.json()["job_id"]),
                                   timeout=600)
                assert retried.status == "succeeded", retried.error
            assert api.post("/v1/admin/periods/1/retrain", headers=ADMIN).status_code == 409
            assert api.post("/v1/admin/periods/3/retrain", headers=ADMIN).status_code == 409
            assert api.post("/v1/admin/periods/9/retrain", headers=ADMIN).status_code == 404
            assert "failed_periods" not in api.get("/readyz").json()  # named only when some fail

        assert [p.status for p in store.list_periods()] == ["trained"] * 3 + ["open"]
        versions = store.list_versions()
        assert sorted(v.period_id for v in versions) == [0, 1, 2]  # one version each
        assert store.active_version() == next(v.version for v in versions if v.period_id == 2)
    finally:
        worker.stop(timeout=60)
