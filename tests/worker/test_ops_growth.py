"""Disk and memory stay bounded: the retention of model files and strategy
checkpoints, and the caps on new users and items per period.

Checked on disk (the files in MODEL_DIR), in the database (rows stored, rows
dropped, version rows kept) and over HTTP (429 with nothing stored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from worker_testkit import REDIS_URL, make_settings, rows_of, wait_for

from sml.data import InteractionLog
from smlrec.app import create_app
from store import ArtifactStore, InProcessBus, NewInteraction, RedisBus, Store
from worker.checkpoint import current_checkpoint
from worker.ingest import StreamDrainer
from worker.runner import Worker

ADMIN = {"Authorization": "Bearer admin-secret"}
PERIOD = 240


def test_model_dir_keeps_the_active_the_newest_and_the_pinned(
    sqlite_url: str, sqlite_store: Store, tmp_path: Path, small_log: InteractionLog
) -> None:
    model_dir = tmp_path / "models"
    settings = make_settings(sqlite_url, model_dir, keep_versions=2)
    store = sqlite_store
    worker = Worker(settings, store, InProcessBus(), ArtifactStore(model_dir))
    worker.start()
    try:
        with TestClient(create_app(settings, run_worker=False)) as api:
            for p in range(5):
                store.ingest(rows_of(small_log, p * PERIOD, (p + 1) * PERIOD))
                closed = store.close_period_and_queue()
                assert closed is not None
                job = wait_for(lambda c=closed: (j := store.get_job(c[1].job_id)) and
                               j.status in ("succeeded", "failed") and j, timeout=600)
                assert job.status == "succeeded", job.error
                if p == 0:
                    pinned = api.put("/v1/admin/models/1/pin", headers=ADMIN)
                    assert pinned.status_code == 200 and pinned.json()["pinned"]
            models = {m["version"]: m for m in
                      api.get("/v1/admin/models", headers=ADMIN).json()["models"]}
            assert [v for v, m in sorted(models.items()) if m["artifact_removed"]] == [2, 3]
            refused = api.post("/v1/admin/models/2/activate", headers=ADMIN)
            assert refused.status_code == 409
            assert api.post("/v1/admin/models/1/activate", headers=ADMIN).status_code == 200
    finally:
        worker.stop(timeout=60)
    pointer = current_checkpoint(store)
    assert pointer is not None
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "model-v000001.pt", "model-v000004.pt", "model-v000005.pt", pointer.path]
    assert len(store.list_versions()) == 5  # the rows stay, with their metrics


def test_new_users_beyond_the_cap_are_refused_with_nothing_stored(
    sqlite_url: str, sqlite_store: Store, tmp_path: Path
) -> None:
    settings = make_settings(sqlite_url, tmp_path / "models", max_new_users_per_period=50,
                             max_new_items_per_period=0)

    def rows(first: int, n: int, tag: str) -> list[dict[str, object]]:
        return [{"user_id": f"u{first + k}", "item_id": f"i{k}", "event_id": f"{tag}{k}"}
                for k in range(n)]

    with TestClient(create_app(settings, run_worker=False)) as api:
        assert api.post("/v1/interactions", json={"interactions": rows(0, 40, "a")}) \
            .status_code == 202
        over = api.post("/v1/interactions", json={"interactions": rows(40, 20, "b")})
        assert over.status_code == 429, over.text
        assert "50" in over.json()["detail"] and "users" in over.json()["detail"]
        assert sqlite_store.count_open() == 40  # nothing of that batch was stored
        assert api.post("/v1/interactions", json={"interactions": rows(0, 40, "c")}) \
            .status_code == 202  # known users are welcome
        assert "smlrec_interactions_refused_total 20.0" in api.get("/metrics").text
        assert sqlite_store.close_period() is not None  # a new period: room again
        assert api.post("/v1/interactions", json={"interactions": rows(40, 20, "d")}) \
            .status_code == 202
    assert sqlite_store.count_open() == 20


@pytest.mark.redis
def test_the_worker_drops_rows_beyond_the_cap_and_counts_them(
    sqlite_url: str, sqlite_store: Store, tmp_path: Path, redis_prefix: str
) -> None:
    from store import Caps

    api = RedisBus(REDIS_URL, prefix=redis_prefix)
    bus = RedisBus(REDIS_URL, prefix=redis_prefix)
    try:
        api.append([NewInteraction(f"u{n}", f"i{n % 5}", 1.7e9, f"e{n}") for n in range(100)])
        ingestor = StreamDrainer(sqlite_store, bus, "w", caps=Caps(users=30))
        while ingestor.drain():
            pass
        assert sqlite_store.count_open() == 30
        assert len(sqlite_store.user_ids()) == 30  # no table grew beyond the cap
        (period,) = sqlite_store.list_periods()
        assert period.n_dropped == 70
        assert sqlite_store.dropped_total() == 70
        settings = make_settings(sqlite_url, tmp_path / "models")
        with TestClient(create_app(settings, run_worker=False)) as http:
            listed = http.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
            assert listed[0]["n_dropped"] == 70
            assert "smlrec_interactions_dropped 70.0" in http.get("/metrics").text
    finally:
        api.close()
        bus.close()
