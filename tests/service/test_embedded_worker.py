"""Embedded mode end to end: the lifespan's worker process runs a retrain queued
through the admin API, and the new version is served without a restart."""

from __future__ import annotations

from service_testkit import ADMIN, ClientFactory, interactions, served_version, wait_for

from smlrec.settings import Settings


def test_admin_retrain_is_run_by_the_embedded_worker(
    settings: Settings, make_client: ClientFactory
) -> None:
    pairs = [(f"u{n % 20}", f"i{(n * 7 + n // 20) % 40}") for n in range(300)]
    with make_client(settings, run_worker=True) as client:
        assert client.post("/v1/interactions", json=interactions(*pairs)).status_code == 202
        response = client.post("/v1/admin/retrain", headers=ADMIN)
        assert response.status_code == 202
        job_id = response.json()["job_id"]

        def finished() -> bool:
            job = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()
            return job["status"] in ("succeeded", "failed")

        assert wait_for(finished, timeout=600)
        job = client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json()
        assert job["status"] == "succeeded", job["error"]
        version = job["model_version"]
        assert wait_for(lambda: served_version(client) == version, timeout=600)
        body = client.get("/v1/users/u3/recommendations?k=5").json()
        assert (body["model_version"], body["fallback"]) == (version, None)
        assert len(body["items"]) == 5
        periods = client.get("/v1/admin/periods", headers=ADMIN).json()["periods"]
        assert periods[0]["status"] == "trained"
