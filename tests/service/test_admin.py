"""Admin endpoints: credentials, retrain jobs, model versions (activation and
rollback), periods."""

from __future__ import annotations

import pytest
from service_testkit import ADMIN, ModelWriter, TestClient, interactions, metric_value, wait_for

from store import Store

ADMIN_CALLS = [
    ("POST", "/v1/admin/retrain"),
    ("GET", "/v1/admin/jobs/some-job"),
    ("GET", "/v1/admin/models"),
    ("POST", "/v1/admin/models/1/activate"),
    ("GET", "/v1/admin/periods"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "t"}, 401),
        ({"Authorization": "Basic dDp0"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Bearer tt"}, 403),
    ],
)
def test_admin_credentials(
    client: TestClient, store: Store, method: str, path: str, headers: dict[str, str],
    status: int,
) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1")))
    response = client.request(method, path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert [p.status for p in store.list_periods()] == ["open"]  # nothing closed
    assert store.running_or_queued_job() is None


def test_client_key_does_not_open_admin(client: TestClient) -> None:
    assert client.get("/v1/admin/models", headers={"X-API-Key": "t"}).status_code == 401


def test_retrain_with_an_empty_period_is_409(client: TestClient, store: Store) -> None:
    response = client.post("/v1/admin/retrain", headers=ADMIN)
    assert response.status_code == 409
    assert "empty" in response.json()["detail"]
    assert all(p.status == "open" for p in store.list_periods())
    assert store.running_or_queued_job() is None


def test_retrain_queues_a_job_and_a_second_is_409(client: TestClient, store: Store) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    response = client.post("/v1/admin/retrain", headers=ADMIN)
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["period_id"] == 0

    job = client.get(f"/v1/admin/jobs/{accepted['job_id']}", headers=ADMIN).json()
    assert job["job_id"] == accepted["job_id"]
    assert (job["status"], job["period_id"], job["model_version"], job["error"]) == (
        "queued", 0, None, None)
    assert job["started_at"] is None and job["finished_at"] is None

    client.post("/v1/interactions", json=interactions(("u3", "i3")))
    again = client.post("/v1/admin/retrain", headers=ADMIN)
    assert again.status_code == 409
    assert accepted["job_id"] in again.json()["detail"]
    periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
    assert [(p["period_id"], p["status"], p["n_interactions"]) for p in periods] == [
        (0, "closed", 2), (1, "open", 1)]  # the second request closed nothing

    store.claim_job(accepted["job_id"])  # running: still 409
    assert client.post("/v1/admin/retrain", headers=ADMIN).status_code == 409
    store.finish_job(accepted["job_id"], "succeeded", model_version=None)
    assert client.post("/v1/admin/retrain", headers=ADMIN).status_code == 202


def test_unknown_job_is_404(client: TestClient) -> None:
    assert client.get("/v1/admin/jobs/no-such-job", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("version", ["1", "0", "-3", "999"])
def test_activating_an_unknown_version_is_404(
    client: TestClient, store: Store, version: str
) -> None:
    response = client.post(f"/v1/admin/models/{version}/activate", headers=ADMIN)
    assert response.status_code == 404
    assert store.active_version() is None


def test_models_newest_first_with_active_and_metrics(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    first = models.write(seed=1)
    second = models.write(seed=2)
    store.set_metrics(first, {"evaluated_on_period": 1, "recall@20": 0.5, "ndcg@20": 0.25,
                              "n_interactions": 10})
    listed = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
    assert [m["version"] for m in listed] == [second, first]
    assert [m["active"] for m in listed] == [True, False]
    assert listed[1]["metrics"] == {"evaluated_on_period": 1, "recall@20": 0.5,
                                    "ndcg@20": 0.25, "n_interactions": 10}
    assert listed[0]["metrics"] is None
    assert listed[0]["strategy"] == "sml" and listed[0]["train_seconds"] == 1.5
    assert {"period_id", "created_at"} <= set(listed[0])


def test_activate_rolls_back_at_once(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    old = models.write(seed=1, activate=False)
    new = models.write(seed=2)
    assert wait_for(lambda: _version(client) == new)

    response = client.post(f"/v1/admin/models/{old}/activate", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["active"]) == (old, True)
    assert _version(client) == old  # no wait: this replica swapped before answering
    assert store.active_version() == old
    listed = client.get("/v1/admin/models", headers=ADMIN).json()["models"]
    assert [m["active"] for m in listed] == [False, True]


def test_corrupt_artifact_keeps_the_old_version(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1"), ("u2", "i2")))
    good = models.write(seed=1)
    assert wait_for(lambda: _version(client) == good)
    bad = models.write(seed=2, activate=False)
    models.corrupt(bad)
    store.set_active_version(bad)  # as the worker would: the replica loads it and fails

    assert wait_for(lambda: _failures(client) == 1)
    assert _version(client) == good
    assert client.get("/v1/users/u1/recommendations").json()["model_version"] == good
    text = client.get("/metrics").text
    assert metric_value(text, "smlrec_active_model_version") == good
    assert metric_value(text, "smlrec_model_swaps_total") == 1

    store.set_active_version(good)
    response = client.post(f"/v1/admin/models/{bad}/activate", headers=ADMIN)
    assert response.status_code == 409
    assert "sha256" in response.json()["detail"]
    assert store.active_version() == good  # refused before anything changed
    assert _failures(client) == 2 and _version(client) == good


def test_missing_artifact_keeps_the_old_version(
    client: TestClient, store: Store, models: ModelWriter
) -> None:
    client.post("/v1/interactions", json=interactions(("u1", "i1")))
    good = models.write(seed=1)
    assert wait_for(lambda: _version(client) == good)
    gone = models.write(seed=2, activate=False)
    info = store.get_version(gone)
    assert info is not None
    (models.artifacts.root / info.path).unlink()
    assert client.post(f"/v1/admin/models/{gone}/activate", headers=ADMIN).status_code == 409
    assert _version(client) == good


def test_periods_list(client: TestClient, store: Store) -> None:
    client.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i1", "timestamp": 100},
        {"user_id": "u1", "item_id": "i2", "timestamp": 200}]})
    store.close_period()
    client.post("/v1/interactions", json={"interactions": [
        {"user_id": "u1", "item_id": "i3", "timestamp": 300}]})
    periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
    assert periods == [
        {"period_id": 0, "status": "closed", "n_interactions": 2, "start": 100.0, "end": 200.0},
        {"period_id": 1, "status": "open", "n_interactions": 1, "start": 300.0, "end": 300.0},
    ]


def _version(client: TestClient) -> int | None:
    version: int | None = client.get("/readyz").json()["model_version"]
    return version


def _failures(client: TestClient) -> float:
    return metric_value(client.get("/metrics").text, "smlrec_model_swap_failures_total")
