"""The service and its embedded worker end to end, for every serving strategy:
periods logged over HTTP, retrained by the worker, the worker's artifacts served
and checked against their own weights; job states as the API reports them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from service_testkit import (
    ADMIN,
    ClientFactory,
    TestClient,
    interactions,
    make_settings,
    served_version,
    wait_for,
)

from store import ArtifactStore, Store, unpack_ids

PERIOD = 300


def _period(n: int) -> list[tuple[str, str]]:
    """300 interactions of 20 users over 40 items (user u's items drift with n)."""
    return [(f"u{k % 20}", f"i{(k * 7 + k // 20 + 3 * n) % 40}") for k in range(PERIOD)]


def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _retrain(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/admin/retrain", headers=ADMIN)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert wait_for(lambda: _job(client, job_id)["status"] in ("succeeded", "failed"))
    job = _job(client, job_id)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.mark.parametrize("strategy", ["sml", "fine_tune", "full_retrain", "spmf"])
def test_each_strategy_trains_serves_and_reports(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory, strategy: str
) -> None:
    settings = make_settings(tmp_path, sqlite_url, strategy=strategy, worker_mode="thread",
                             worker_poll_seconds=0.05, precompute_depth=0)
    jobs = []
    with make_client(settings, run_worker=True) as client:
        for n in range(2):
            accepted = client.post("/v1/interactions", json=interactions(*_period(n)))
            assert accepted.status_code == 202 and accepted.json()["accepted"] == PERIOD
            jobs.append(_retrain(client))
        assert [j["model_version"] for j in jobs] == [1, 2]
        for job in jobs:  # the real job's times, in order
            assert job["error"] is None
            assert job["started_at"] is not None and job["finished_at"] is not None
            assert job["started_at"] <= job["finished_at"]
        assert jobs[0]["finished_at"] <= jobs[1]["started_at"]
        assert wait_for(lambda: served_version(client) == 2)

        models = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
        assert [(m["version"], m["period_id"], m["strategy"], m["active"]) for m in models] == [
            (2, 1, strategy, True), (1, 0, strategy, False)]
        for model in models:  # measured by the worker, not written by a test
            assert 0 < model["train_seconds"] < 600
        assert models[1]["metrics"]["evaluated_on_period"] == 1  # scored on the next period
        assert models[0]["metrics"] is None

        # the worker's artifact, served: the brute-force ranking of its own weights
        store = Store.from_url(settings.database_url)
        try:
            info = store.get_version(2)
            assert info is not None
            payload = ArtifactStore(settings.model_dir).load(info.path, info.sha256,
                                                             info.size_bytes)
            seen = {i for u, i in _period(0) + _period(1) if u == "u3"}
        finally:
            store.close()
        assert (payload["strategy"], payload["version"], payload["period_id"]) == (strategy, 2, 1)
        users = unpack_ids(payload["user_ids"], payload["user"].shape[0])
        items = unpack_ids(payload["item_ids"], payload["item"].shape[0])
        user, item = payload["user"], payload["item"]
        scores = item[:, :-1] @ user[users.index("u3"), :-1] + item[:, -1]
        ranked = [items[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]
        body = client.get("/v1/users/u3/recommendations", params={"k": 5}).json()
        assert (body["model_version"], body["fallback"]) == (2, None)
        assert [e["item_id"] for e in body["items"]] == [i for i in ranked if i not in seen][:5]
        expected = {items[i]: float(scores[i]) for i in range(len(items))}
        for entry in body["items"]:
            assert entry["score"] == pytest.approx(expected[entry["item_id"]], rel=1e-4,
                                                   abs=1e-5)

        periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
        assert [(p["status"], p["n_interactions"]) for p in periods] == [
            ("trained", PERIOD), ("trained", PERIOD), ("open", 0)]


def test_job_states_running_then_failed_over_http(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A boundary held at its last step: the job reads ``running`` (started,
    not finished); the step then fails: ``failed`` with the error and both times."""
    import worker.boundary

    reached, release = threading.Event(), threading.Event()

    def write_fails(*args: Any, **kwargs: Any) -> int:
        reached.set()
        release.wait(60)
        raise RuntimeError("the model volume is full")

    monkeypatch.setattr(worker.boundary.PeriodTrainer, "_write_version", write_fails)
    settings = make_settings(tmp_path, sqlite_url, worker_mode="thread",
                             worker_poll_seconds=0.05, retrain_attempts=1)
    with make_client(settings, run_worker=True) as client:
        client.post("/v1/interactions", json=interactions(*_period(0)))
        before = time.time()
        response = client.post("/v1/admin/retrain", headers=ADMIN)
        assert response.status_code == 202
        job_id, period_id = response.json()["job_id"], response.json()["period_id"]
        try:
            assert reached.wait(60), "the boundary never reached its write"
            running = _job(client, job_id)
            assert running["status"] == "running"
            assert (running["job_id"], running["period_id"]) == (job_id, period_id)
            assert running["model_version"] is None and running["error"] is None
            assert running["started_at"] is not None and running["started_at"] >= before - 1
            assert running["finished_at"] is None
        finally:
            release.set()
        assert wait_for(lambda: _job(client, job_id)["status"] != "running")
        failed = _job(client, job_id)
        assert failed["status"] == "failed"
        assert "the model volume is full" in failed["error"]
        assert failed["model_version"] is None
        assert failed["started_at"] is not None and failed["finished_at"] is not None
        assert running["started_at"] <= failed["finished_at"]
        assert client.get("/v1/admin/models", headers=ADMIN).json()["models"] == []
        assert client.get("/v1/users/u3/recommendations").json()["model_version"] is None


def test_operations_endpoints_take_no_client_key(
    tmp_path: Path, sqlite_url: str, make_client: ClientFactory
) -> None:
    with make_client(make_settings(tmp_path, sqlite_url, api_key="k3y")) as client:
        assert client.get("/v1/users/u/recommendations").status_code == 401  # the key is on
        health = client.get("/healthz")
        assert health.status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE " in metrics.text
        for path in ("/healthz", "/readyz", "/metrics"):  # a wrong key is no reason to refuse
            assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 200
